import CRC32 from 'crc-32';
import { Transform } from 'node:stream';
import { createHash } from 'node:crypto';
import { STRING_HASH_OFFSET, stringKey, type StateStore } from '../src/store.js';
import type { EntityProperties } from '../src/weaviate.js';
import { BATCH_STREAM } from './batch-items.js';
import type { DecodedBatch, FailedLine } from './decode-results.js';
import { crcHex } from './format-requests.js';

/** One Weaviate object: a (string, field) pair with the string's vector. */
export interface EntityObject {
  uuid: string;
  properties: EntityProperties;
  vector: Float32Array;
  /** The vector's base64 text as received, when canonical: the JSONL sink writes it without encoding again. */
  vectorBase64?: string;
  /** The string's id in the work directory, and the field, for marking it indexed. */
  stringId: number;
  field: string;
}

/**
 * xxh3-128 of the raw UTF-8 bytes, 32 lowercase hex digits: the seed system's hash_value, read off the string's store
 * key (see stringKey), which is how indexing gets it (StoredString.hash).
 */
export function hashValue(text: string): string {
  return stringKey(text).toString('hex', STRING_HASH_OFFSET);
}

/**
 * The object id: uuid5(DNS, "<hash_value>_<field>"), exactly as the seed system computed it, so objects written by
 * embatch replace the seed's own. It depends on the text and the field only: batch, real-time and replay agree, and
 * strings that share a CRC32 get different ids.
 */
export function objectUuid(hash: string, field: string): string {
  return uuid5(`${hash}_${field}`);
}

/** The DNS namespace of RFC 4122, which Weaviate's generateUuid5 (and the Python client's) use. */
const DNS_NAMESPACE = Buffer.from('6ba7b8109dad11d180b400c04fd430c8', 'hex');

/** RFC 4122 version 5 (SHA-1) UUID of a name in the DNS namespace: weaviate-client's generateUuid5(name). */
export function uuid5(name: string): string {
  const b = createHash('sha1').update(DNS_NAMESPACE).update(name, 'utf8').digest();
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex', 0, 16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** What this stage needs of the store: strings by id, their per-field counts, and what a target already took. */
export type ObjectStore = Pick<StateStore, 'readStrings' | 'frequencies' | 'takenBy'>;

/**
 * An object for a text and field, with the same id and hash_value as the pipeline gives it (so a later embatch run
 * replaces it rather than adding another): for indexing vectors computed elsewhere with upsertWeaviate.
 */
export function entityObject(text: string, field: string, vector: Float32Array, frequency = 1): EntityObject {
  const hash = hashValue(text);
  return { uuid: objectUuid(hash, field), properties: { original_string: text, hash_value: hash, field_type: field, frequency }, vector, stringId: -1, field };
}

export interface BuildObjectsOptions {
  store: ObjectStore;
  /**
   * Skip (string, field) pairs this sink target already took (index): acknowledged, and unless `retryRejects`,
   * refused for good. Without it (replay) everything is sent again.
   */
  skipIndexed?: { target: number; retryRejects: boolean };
  onFailed: (failed: FailedLine) => void;
  /**
   * Objects not sent: `acked` ones the target already acknowledged, and those it refused for good before (by the id
   * of their string, one entry per object).
   */
  onSkipped?: (acked: number, refusedStringIds: number[]) => void;
  /**
   * Per batch: result lines mapped to their string (each becomes one object per field the string occurs in), the
   * objects they make (sent or not), and the strings that make none (no source has them any more).
   */
  onMapped?: (lines: number, objects: number, objectless: number) => void;
}

/**
 * Maps each result back to its string (one batched store read per batch) and fans it out to one object per field the
 * string occurs in, with its frequency there.
 */
export function buildObjects(options: BuildObjectsOptions): Transform {
  const { store } = options;
  return new Transform({
    ...BATCH_STREAM,
    transform(batch: DecodedBatch, _enc, callback) {
      for (const f of batch.failed) options.onFailed(f);
      store
        .readStrings(batch.ok.map((r) => r.id))
        .then(async (found) => {
          const objects: EntityObject[] = [];
          let mapped = 0;
          let objectless = 0;
          batch.ok.forEach((r, i) => {
            const string = found[i];
            // The custom_id's CRC32 must name the text too: a line from another work directory's file is refused.
            if (!string || crcHex(CRC32.str(string.text)) !== r.crc) {
              options.onFailed({ file: r.file, line: r.line, customId: r.customId, code: 'unknown_custom_id', reason: 'no string with this custom_id in the work directory', retryable: false });
              return;
            }
            mapped++;
            const hash = string.hash;
            const before = objects.length;
            for (const [field, frequency] of Object.entries(store.frequencies(string.record))) {
              objects.push({ uuid: objectUuid(hash, field), properties: { original_string: string.text, hash_value: hash, field_type: field, frequency }, vector: r.vector, vectorBase64: r.base64, stringId: string.id, field });
            }
            if (objects.length === before) objectless++;
          });
          options.onMapped?.(mapped, objects.length, objectless);
          const skip = options.skipIndexed;
          if (!skip || !objects.length) return objects;
          // An object acknowledged with another frequency (a later prepare changed the counts) is sent again.
          const taken = await store.takenBy(skip.target, objects.map((o) => [o.stringId, o.field, o.properties.frequency]));
          const rest = objects.filter((_, i) => taken[i] === undefined || (taken[i] === 'refused' && skip.retryRejects));
          const refused = skip.retryRejects ? [] : objects.filter((_, i) => taken[i] === 'refused').map((o) => o.stringId);
          options.onSkipped?.(objects.length - rest.length - refused.length, refused);
          return rest;
        })
        .then(
          (objects) => callback(null, objects.length ? objects : undefined),
          (err: unknown) => callback(err as Error),
        );
    },
  });
}
