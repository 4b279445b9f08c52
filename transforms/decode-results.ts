import { endianness } from 'node:os';
import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { parseCustomId } from './format-requests.js';
import type { ParsedLine } from './parse-results.js';

/** A result line whose embedding decoded and passed the checks. */
export interface DecodedResult {
  file: string;
  line: number;
  customId: string;
  id: number;
  crc: string;
  vector: Float32Array;
  /** The embedding's base64 text as received, when it was base64 in canonical form (a sink may write it as is). */
  base64?: string;
}

/** A line that produced no vector, and why; `retryable` lines go back to the retry command. */
export interface FailedLine {
  file: string;
  line: number;
  customId: string | null;
  code: string;
  reason: string;
  retryable: boolean;
}

export interface DecodedBatch {
  ok: DecodedResult[];
  failed: FailedLine[];
}

/** Line errors worth another try: the request never ran, or failed on the server's side. */
const RETRYABLE_CODES = new Set(['batch_expired', 'batch_cancelled', 'rate_limit_exceeded', 'server_error', 'timeout', 'internal_error', 'no_response']);

export function isRetryable(code: string, status: number | undefined): boolean {
  return RETRYABLE_CODES.has(code) || status === 429 || (status ?? 0) >= 500;
}

interface ResultJson {
  custom_id?: unknown;
  response?: { status_code?: number; body?: { data?: Array<{ embedding?: unknown; index?: number }>; error?: { message?: string; code?: string | null; type?: string } } } | null;
  error?: { code?: string; message?: string } | null;
}

/**
 * Checks each parsed line and decodes its embedding (a float array, or base64 little-endian float32) into a
 * Float32Array: a known custom_id, status 200, no error, one embedding of the expected dimension, finite values.
 */
export function decodeResults(options: { dimensions: number | null }): Transform {
  return new Transform({
    ...BATCH_STREAM,
    transform(lines: ParsedLine[], _enc, callback) {
      const out: DecodedBatch = { ok: [], failed: [] };
      for (const l of lines) {
        const r = decodeLine(l, options.dimensions);
        if ('vector' in r) out.ok.push(r);
        else out.failed.push(r);
      }
      callback(null, out);
    },
  });
}

export function decodeLine(l: ParsedLine, dimensions: number | null): DecodedResult | FailedLine {
  const fail = (customId: string | null, code: string, reason: string, retryable = false): FailedLine => ({ file: l.file, line: l.line, customId, code, reason, retryable });
  if (l.corrupt) return fail(null, 'corrupt_line', l.corrupt);
  const r = l.json as ResultJson;
  if (!r || typeof r !== 'object') return fail(null, 'corrupt_line', 'not a JSON object');
  const customId = typeof r.custom_id === 'string' ? r.custom_id : null;
  const parsed = customId ? parseCustomId(customId) : undefined;
  if (!customId || !parsed) return fail(customId, 'unknown_custom_id', `custom_id ${JSON.stringify(r.custom_id)} was not written by embatch`);
  const status = r.response?.status_code;
  if (r.error || !r.response || (status !== undefined && status >= 400)) {
    const code = r.error?.code ?? r.response?.body?.error?.code ?? r.response?.body?.error?.type ?? (status ? `http_${status}` : 'no_response');
    const message = r.error?.message ?? r.response?.body?.error?.message ?? 'no message';
    return fail(customId, code, message, isRetryable(code, status));
  }
  if (status !== 200) return fail(customId, 'bad_status', `status_code ${String(status)}`);
  const data = r.response.body?.data;
  if (!Array.isArray(data) || data.length !== 1) return fail(customId, 'bad_body', `expected one embedding, got ${Array.isArray(data) ? data.length : 'none'}`);
  const vector = toVector(data[0]!.embedding);
  if (typeof vector === 'string') return fail(customId, 'bad_embedding', vector);
  if (dimensions !== null && vector.length !== dimensions) return fail(customId, 'wrong_dimensions', `embedding has ${vector.length} dimensions, expected ${dimensions}`);
  for (let i = 0; i < vector.length; i++) if (!Number.isFinite(vector[i]!)) return fail(customId, 'not_finite', `embedding value ${i} is ${vector[i]}`);
  const embedding = data[0]!.embedding;
  const base64 = typeof embedding === 'string' && isCanonicalBase64(embedding, vector.byteLength) ? embedding : undefined;
  return { file: l.file, line: l.line, customId, id: parsed.id, crc: parsed.crc, vector, ...(base64 ? { base64 } : {}) };
}

const BASE64_CHAR = /^[A-Za-z0-9+/=]{2}$/;

/**
 * The text is exactly what encoding `bytes` bytes gives: its length is the canonical one and it decoded to that many
 * bytes (a character outside the alphabet is skipped by the decoder, so it would leave fewer), and the padding
 * positions hold alphabet characters. Such a text can be written into JSON as it is.
 */
function isCanonicalBase64(text: string, bytes: number): boolean {
  return text.length === Math.ceil(bytes / 3) * 4 && BASE64_CHAR.test(text.slice(-2));
}

/** float arrays and base64 (little-endian float32) both become a Float32Array; anything else is an error text. */
export function toVector(embedding: unknown): Float32Array | string {
  if (typeof embedding === 'string') {
    const bytes = Buffer.from(embedding, 'base64');
    if (bytes.length === 0 || bytes.length % 4 !== 0) return `base64 embedding of ${bytes.length} bytes is not a whole number of float32 values`;
    // On little-endian machines (the wire order) the bytes are the vector: used in place when the decoded buffer is
    // the vector's alone (large decodes are), else copied once into one that is; a per-value read elsewhere.
    if (littleEndian && bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length) return new Float32Array(bytes.buffer);
    if (littleEndian) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    const v = new Float32Array(bytes.length / 4);
    for (let i = 0; i < v.length; i++) v[i] = bytes.readFloatLE(i * 4);
    return v;
  }
  if (Array.isArray(embedding) && embedding.length > 0) {
    if (!embedding.every((x) => typeof x === 'number')) return 'embedding holds values that are not numbers';
    return new Float32Array(embedding as number[]);
  }
  return 'no embedding';
}

const littleEndian = endianness() === 'LE';
