import { Transform } from 'node:stream';
import { TextDecoder } from 'node:util';
import { InputError } from '../src/errors.js';

/**
 * Bytes to text in the configured encoding. Invalid byte sequences are an error naming the byte offset and line,
 * never a silent U+FFFD: a replaced character would be embedded and indexed as if it were the data. A UTF-8 BOM is
 * dropped.
 */
export function decodeText(file: string, encoding: string): Transform {
  let decoder: InstanceType<typeof TextDecoder>;
  try {
    decoder = new TextDecoder(encoding, { fatal: true });
  } catch (err) {
    throw new InputError('INPUT_ENCODING', file, undefined, `unknown encoding "${encoding}" (input.encoding)`, { cause: err });
  }
  let offset = 0;
  let lines = 1;
  return new Transform({
    readableObjectMode: false,
    decodeStrings: true,
    transform(chunk: Buffer, _enc, callback) {
      let text: string;
      try {
        text = decoder.decode(chunk, { stream: true });
      } catch (err) {
        const bad = firstInvalidOffset(encoding, chunk);
        const line = lines + countNewlines(chunk, bad);
        callback(new InputError('INPUT_ENCODING', file, line, `bytes are not valid ${encoding} near byte offset ${offset + bad}`, { cause: err }));
        return;
      }
      offset += chunk.length;
      lines += countNewlines(chunk, chunk.length);
      callback(null, text);
    },
    flush(callback) {
      try {
        const rest = decoder.decode();
        callback(null, rest || undefined);
      } catch (err) {
        callback(new InputError('INPUT_ENCODING', file, lines, `input ends inside a ${encoding} character at byte offset ${offset}`, { cause: err }));
      }
    },
  });
}

function countNewlines(buf: Buffer, end: number): number {
  let n = 0;
  for (let i = buf.indexOf(10); i !== -1 && i < end; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

/** Only on the error path: the longest prefix of the chunk that decodes, found by bisection. */
function firstInvalidOffset(encoding: string, chunk: Buffer): number {
  let lo = 0;
  let hi = chunk.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    try {
      new TextDecoder(encoding, { fatal: true }).decode(chunk.subarray(0, mid), { stream: true });
      lo = mid;
    } catch {
      hi = mid - 1;
    }
  }
  return lo;
}
