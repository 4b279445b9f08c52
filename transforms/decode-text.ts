import { isUtf8 } from 'node:buffer';
import { Transform } from 'node:stream';
import { TextDecoder } from 'node:util';
import { InputError } from '../src/errors.js';

/**
 * Bytes to text in the configured encoding. Invalid byte sequences are an error naming the byte offset and line,
 * never a silent U+FFFD: a replaced character would be embedded and indexed as if it were the data. A UTF-8 BOM is
 * dropped.
 *
 * UTF-8 input (the common case) stays bytes: each chunk is checked and passed on cut at a character boundary, the
 * parser reading bytes anyway. Decoding it to a string here only for the stream to encode it back cost ~0.45 s of the
 * main thread per 380 MB. Other encodings are decoded to strings.
 */
export function decodeText(file: string, encoding: string): Transform {
  let decoder: InstanceType<typeof TextDecoder>;
  try {
    decoder = new TextDecoder(encoding, { fatal: true });
  } catch (err) {
    throw new InputError('INPUT_ENCODING', file, undefined, `unknown encoding "${encoding}" (input.encoding)`, { cause: err });
  }
  /** Byte offset in the input of the first byte not yet passed on, and its line. */
  let offset = 0;
  let lines = 1;
  const invalid = (bytes: Buffer, cause?: unknown) => {
    const bad = firstInvalidOffset(encoding, bytes);
    return new InputError('INPUT_ENCODING', file, lines + countNewlines(bytes, bad), `bytes are not valid ${encoding} near byte offset ${offset + bad}`, { cause });
  };
  const cutShort = (cause?: unknown) => new InputError('INPUT_ENCODING', file, lines, `input ends inside a ${encoding} character at byte offset ${offset}`, { cause });

  if (decoder.encoding === 'utf-8') {
    /** Bytes held back: the start of a character cut by the end of the last chunk, or what may be a BOM's start. */
    let carry: Buffer | undefined;
    let atStart = true;
    return new Transform({
      decodeStrings: true,
      transform(chunk: Buffer, _enc, callback) {
        if (!chunk.length) return callback();
        let bytes = carry ? Buffer.concat([carry, chunk]) : chunk;
        carry = undefined;
        if (atStart) {
          if (bytes.length < 3 && UTF8_BOM.subarray(0, bytes.length).equals(bytes)) {
            carry = Buffer.from(bytes);
            return callback();
          }
          atStart = false;
          if (UTF8_BOM.equals(bytes.subarray(0, 3))) {
            bytes = bytes.subarray(3);
            offset += 3;
          }
        }
        const end = wholeCharactersEnd(bytes);
        const whole = bytes.subarray(0, end);
        if (!isUtf8(whole)) return callback(invalid(whole));
        if (end < bytes.length) carry = Buffer.from(bytes.subarray(end));
        offset += whole.length;
        lines += countNewlines(whole, whole.length);
        callback(null, whole.length ? whole : undefined);
      },
      flush(callback) {
        // Only ever a character's start: cut short, unless its bytes are wrong already.
        if (carry) return callback(firstInvalidOffset(encoding, carry) === carry.length ? cutShort() : invalid(carry));
        callback();
      },
    });
  }

  return new Transform({
    readableObjectMode: false,
    decodeStrings: true,
    transform(chunk: Buffer, _enc, callback) {
      let text: string;
      try {
        text = decoder.decode(chunk, { stream: true });
      } catch (err) {
        callback(invalid(chunk, err));
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
        callback(cutShort(err));
      }
    },
  });
}

const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * Where the last whole UTF-8 character of `bytes` ends: before a lead byte whose character the bytes cut short, else
 * the end. Invalid sequences are left for isUtf8 to find.
 */
function wholeCharactersEnd(bytes: Buffer): number {
  for (let k = bytes.length - 1; k >= 0 && k >= bytes.length - 4; k--) {
    const b = bytes[k]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back for its lead
    const length = b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    return k + length > bytes.length ? k : bytes.length;
  }
  return bytes.length;
}

function countNewlines(buf: Buffer, end: number): number {
  let n = 0;
  for (let i = buf.indexOf(10); i !== -1 && i < end; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

/** Only on the error path: the longest prefix of the bytes that decodes, found by bisection. */
function firstInvalidOffset(encoding: string, bytes: Buffer): number {
  let lo = 0;
  let hi = bytes.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    try {
      new TextDecoder(encoding, { fatal: true }).decode(bytes.subarray(0, mid), { stream: true });
      lo = mid;
    } catch {
      hi = mid - 1;
    }
  }
  return lo;
}
