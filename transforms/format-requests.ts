import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import type { NewString } from '../src/types.js';

export interface RequestBodyOptions {
  model: string;
  encodingFormat: 'float' | 'base64';
  dimensions: number | null;
}

/** A new string as it leaves for the writer: its request line, or the reason it has none. */
export interface RequestItem {
  id: number;
  field: string;
  line?: string;
  tokens: number;
  /** `tokens` is an estimate. */
  estimated?: true;
  skip?: string;
}

/** `{crc32hex}_{field}_{id}`: the CRC32 names the text (checked when results come back), the id is unique in the work directory. */
export function customId(crc: number, field: string, id: number): string {
  return `${crcHex(crc)}_${idField(field)}_${id}`;
}

/** Every byte as 2 lowercase hex digits: four lookups spell a CRC32 ~6x faster than toString(16) + padStart. */
const HEX2 = Array.from({ length: 256 }, (_, n) => n.toString(16).padStart(2, '0'));

/** A CRC32 as custom ids spell it: 8 lowercase hex digits. */
export function crcHex(crc: number): string {
  return HEX2[crc >>> 24]! + HEX2[(crc >>> 16) & 255]! + HEX2[(crc >>> 8) & 255]! + HEX2[crc & 255]!;
}

/** Field names as they appear in custom ids (a handful per run, so each is cleaned once). */
const idFields = new Map<string, string>();
function idField(field: string): string {
  let clean = idFields.get(field);
  if (clean === undefined) idFields.set(field, (clean = field.replace(/[^A-Za-z0-9-]/g, '-')));
  return clean;
}

/** Parses a custom_id written by customId(); undefined if it is not one of ours. */
export function parseCustomId(customIdText: string): { crc: string; field: string; id: number } | undefined {
  const m = /^([0-9a-f]{8})_(.*)_(\d+)$/.exec(customIdText);
  return m ? { crc: m[1]!, field: m[2]!, id: Number(m[3]) } : undefined;
}

/**
 * A function that builds the Batch API request line for one input. The constant part of the body is serialised once;
 * only the custom_id and the input are escaped per line (the same JSON as JSON.stringify of the whole object), the
 * input not at all when its JSON is given.
 */
export function requestLineBuilder(body: RequestBodyOptions): (customIdText: string, input: string, inputJson?: string) => string {
  const tail = JSON.stringify({ encoding_format: body.encodingFormat, ...(body.dimensions === null ? {} : { dimensions: body.dimensions }) }).slice(1);
  const head = `,"method":"POST","url":"/v1/embeddings","body":{"model":${JSON.stringify(body.model)},"input":`;
  return (customIdText, input, inputJson = JSON.stringify(input)) => `{"custom_id":${JSON.stringify(customIdText)}${head}${inputJson},${tail}}`;
}

/** New strings to request lines (one input per line, so every result maps back to one string). */
export function formatRequests(body: RequestBodyOptions): Transform {
  const requestLine = requestLineBuilder(body);
  return new Transform({
    ...BATCH_STREAM,
    transform(batch: NewString[], _enc, callback) {
      const items = new Array<RequestItem>(batch.length);
      for (let i = 0; i < batch.length; i++) {
        const s = batch[i]!;
        const item: RequestItem = { id: s.id, field: s.field, tokens: s.tokens ?? 0 };
        if (s.skip) item.skip = s.skip;
        else item.line = requestLine(customId(s.crc, s.field, s.id), s.text, s.json);
        if (s.estimated) item.estimated = true;
        items[i] = item;
      }
      callback(null, items);
    },
  });
}
