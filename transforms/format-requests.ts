import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import type { NewString } from '../src/types.js';

export interface RequestBodyOptions {
  model: string;
  encodingFormat: 'float' | 'base64';
  dimensions: number | null;
}

/** A new string as it leaves for the writer: the length of its request line, or the reason it has none. */
export interface RequestItem {
  id: number;
  field: string;
  /** Bytes of its line in the batch's `bytes` (newline included); absent when the string is skipped. */
  bytes?: number;
  tokens: number;
  /** `tokens` is an estimate. */
  estimated?: true;
  skip?: string;
}

/** A batch of request lines: their bytes back to back, and one item per string, in the same order. */
export interface RequestBatch {
  bytes: Buffer;
  items: RequestItem[];
}

/** Every byte as 2 lowercase hex digits: four lookups spell a CRC32 ~6x faster than toString(16) + padStart. */
const HEX2 = Array.from({ length: 256 }, (_, n) => n.toString(16).padStart(2, '0'));

/** A CRC32 as custom ids spell it: 8 lowercase hex digits. */
export function crcHex(crc: number): string {
  return HEX2[crc >>> 24]! + HEX2[(crc >>> 16) & 255]! + HEX2[(crc >>> 8) & 255]! + HEX2[crc & 255]!;
}

/** A field name as custom ids spell it. */
function idField(field: string): string {
  return field.replace(/[^A-Za-z0-9-]/g, '-');
}

/** Parses a custom_id (`{crc32hex}_{field}_{id}`, see RequestLineFormat); undefined if it is not one of ours. */
export function parseCustomId(customIdText: string): { crc: string; field: string; id: number } | undefined {
  const m = /^([0-9a-f]{8})_(.*)_(\d+)$/.exec(customIdText);
  return m ? { crc: m[1]!, field: m[2]!, id: Number(m[3]) } : undefined;
}

/**
 * The custom_id of a request or result line, read off the line's text without parsing the rest (a result line's
 * embedding, a request's input): for passes that need only the ids.
 */
export function customIdOf(line: string): string | undefined {
  return /"custom_id":\s*"([^"]+)"/.exec(line)?.[1];
}

/** Lowercase hex digits as bytes. */
const HEX_DIGITS = Buffer.from('0123456789abcdef');
const CUSTOM_ID_START = Buffer.from('{"custom_id":"');
/** Bytes of a line besides its custom id's field and its input's JSON, at most: the id has up to 16 digits. */
const FIXED_ID_BYTES = CUSTOM_ID_START.length + 8 + 1 + 1 + 16;

/**
 * Encodes Batch API request lines straight into one buffer per batch, the same bytes as JSON.stringify of each line's
 * object and a newline: no string per line (building each line as a string, then copying it flat to encode it, was a
 * quarter of everything the ingest worker allocated). The constant parts of the body are encoded once; the input's
 * JSON is the one the dedup stage made for the text log when there is one.
 */
export class RequestLineFormat {
  /** From the custom id's closing quote to the input: `","method":"POST",...,"input":`. */
  readonly #head: Buffer;
  /** After the input: the rest of the body, the closing braces and the newline. */
  readonly #tail: Buffer;
  /** Field names as custom ids spell them, as bytes. */
  readonly #fields = new Map<string, Buffer>();

  constructor(body: RequestBodyOptions) {
    this.#head = Buffer.from(`","method":"POST","url":"/v1/embeddings","body":{"model":${JSON.stringify(body.model)},"input":`);
    const rest = JSON.stringify({ encoding_format: body.encodingFormat, ...(body.dimensions === null ? {} : { dimensions: body.dimensions }) }).slice(1);
    this.#tail = Buffer.from(`,${rest}}\n`);
  }

  /** The request lines of these strings (skipped ones have none), with each one's length. */
  format(strings: NewString[]): RequestBatch {
    let room = 0;
    for (const s of strings) {
      if (s.skip) continue;
      // A truncated text lost its JSON: made here. Each UTF-16 unit of JSON takes at most 3 bytes.
      s.json ??= JSON.stringify(s.text);
      room += FIXED_ID_BYTES + s.field.length * 3 + this.#head.length + s.json.length * 3 + this.#tail.length;
    }
    const out = Buffer.allocUnsafe(room);
    const items = new Array<RequestItem>(strings.length);
    let at = 0;
    for (let i = 0; i < strings.length; i++) {
      const s = strings[i]!;
      const item: RequestItem = { id: s.id, field: s.field, tokens: s.tokens ?? 0 };
      if (s.skip) item.skip = s.skip;
      else {
        const start = at;
        at = this.#write(out, at, s);
        item.bytes = at - start;
      }
      if (s.estimated) item.estimated = true;
      items[i] = item;
    }
    return { bytes: out.subarray(0, at), items };
  }

  #write(out: Buffer, at: number, s: NewString): number {
    out.set(CUSTOM_ID_START, at);
    at += CUSTOM_ID_START.length;
    for (let shift = 28; shift >= 0; shift -= 4) out[at++] = HEX_DIGITS[(s.crc >>> shift) & 15]!;
    out[at++] = 0x5f; // _
    const field = this.#fieldBytes(s.field);
    out.set(field, at);
    at += field.length;
    out[at++] = 0x5f;
    let digits = 1;
    for (let power = 10; power <= s.id; power *= 10) digits++;
    for (let k = at + digits - 1, id = s.id; k >= at; k--, id = Math.floor(id / 10)) out[k] = 0x30 + (id % 10);
    at += digits;
    out.set(this.#head, at);
    at += this.#head.length;
    at += out.write(s.json!, at, 'utf8');
    out.set(this.#tail, at);
    return at + this.#tail.length;
  }

  #fieldBytes(field: string): Buffer {
    let bytes = this.#fields.get(field);
    if (!bytes) this.#fields.set(field, (bytes = Buffer.from(idField(field))));
    return bytes;
  }
}

/** New strings to their request lines (one input per line, so every result maps back to one string). */
export function formatRequests(body: RequestBodyOptions): Transform {
  const format = new RequestLineFormat(body);
  return new Transform({
    ...BATCH_STREAM,
    transform(batch: NewString[], _enc, callback) {
      // Not callback(null, ...): with Transform's callback inlined here, V8 threw this function's optimized code
      // away on a third of the batches ("insufficient type feedback") and ran the rest of them in the interpreter.
      this.push(format.format(batch));
      callback();
    },
  });
}
