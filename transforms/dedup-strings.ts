import CRC32 from 'crc-32';
import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { addOccurrences, crcKey, type StateStore, type StringEntry } from '../src/store.js';
import type { IngestCounters, NewString } from '../src/types.js';
import type { ExtractedBatch } from './extract-strings.js';

export interface DedupOptions {
  store: StateStore;
  run: number;
  /** Whose counts these are: the input file's absolute path, or "stdin". */
  source: string;
  /** The configured embed_fields; ExtractedBatch.fields index into it. */
  embedFields: string[];
  counters: IngestCounters;
}

interface Seen {
  /** Occurrences in this batch in the first field it was seen in... */
  n: number;
  firstField: number;
  /** ...and per embed field index, once it shows up in a second field (rare, so allocated only then). */
  counts: number[] | undefined;
  line: number | undefined;
}

/**
 * Keeps each distinct string once, across runs: one batched LevelDB read and one batched write per batch, never a
 * round trip per row. A string is found by its CRC32 bucket and then by exact text, so strings that share a CRC32
 * ("plumless" and "buckeroo") stay two strings. Passes on only the strings this work directory has never seen, each
 * with its new global id; every occurrence is counted per field and source.
 *
 * The write of batch N overlaps the lookup and work of batch N+1 (LevelDB writes cost as much as parsing here). Batch
 * N's buckets stay in an overlay until their write lands, so N+1 sees them; and batch N's new strings go downstream
 * only after their write landed, so no later commit can cover ids whose entries are not yet stored.
 */
export function dedupStrings(options: DedupOptions): Transform {
  const { store, run, counters, embedFields } = options;
  const source = store.sourceId(options.source);
  const fieldIds = embedFields.map((name) => store.fieldId(name));
  let nextId = store.committedId;
  let inFlight: { write: Promise<void>; fresh: NewString[]; buckets: Map<string, StringEntry[]> } | undefined;

  const processBatch = async (batch: ExtractedBatch): Promise<void> => {
    // Aggregate inside the batch first: most repeats (roles, genres) never reach the store.
    const seen = new Map<string, Seen>();
    for (let i = 0; i < batch.texts.length; i++) {
      const text = batch.texts[i]!;
      const field = batch.fields[i]!;
      const s = seen.get(text);
      if (!s) seen.set(text, { n: 1, firstField: field, counts: undefined, line: batch.lines[i] });
      else if (field === s.firstField && !s.counts) s.n++;
      else {
        s.counts ??= Object.assign(new Array<number>(embedFields.length).fill(0), { [s.firstField]: s.n });
        s.counts[field]!++;
      }
    }
    const keyOf = new Map<string, string>();
    const buckets = new Map<string, StringEntry[]>();
    const toRead: string[] = [];
    for (const text of seen.keys()) {
      const key = crcKey(CRC32.str(text));
      keyOf.set(text, key);
      if (buckets.has(key)) continue;
      const pending = inFlight?.buckets.get(key);
      if (pending) buckets.set(key, pending);
      else {
        buckets.set(key, []);
        toRead.push(key);
      }
    }
    const found = await store.getBuckets(toRead);
    toRead.forEach((key, i) => {
      if (found[i]) buckets.set(key, found[i]!);
    });

    const fresh: NewString[] = [];
    const firstNewId = nextId;
    const newIdBuckets: string[] = [];
    for (const [text, s] of seen) {
      const key = keyOf.get(text)!;
      const bucket = buckets.get(key)!;
      let entry = bucket.find((e) => e.t === text);
      if (!entry) {
        entry = { id: nextId++, t: text, f: fieldIds[s.firstField]!, lr: run, src: [] };
        bucket.push(entry);
        newIdBuckets.push(key);
        counters.distinct++;
        counters.newStrings++;
        fresh.push({ id: entry.id, crc: parseInt(key, 16), field: embedFields[s.firstField]!, text, line: s.line });
      } else if (entry.lr !== run) {
        entry.lr = run;
        counters.distinct++;
        counters.known++;
      }
      if (!s.counts) addOccurrences(store, entry, source, run, fieldIds[s.firstField]!, s.n);
      else for (let f = 0; f < s.counts.length; f++) if (s.counts[f]) addOccurrences(store, entry, source, run, fieldIds[f]!, s.counts[f]!);
    }
    // One write in flight at a time keeps writes in order.
    const previous = await landPrevious();
    if (previous.length) stage.push(previous);
    inFlight = { write: store.putBuckets(buckets, firstNewId, newIdBuckets), fresh, buckets };
  };

  const landPrevious = async (): Promise<NewString[]> => {
    if (!inFlight) return [];
    const { write, fresh } = inFlight;
    await write;
    inFlight = undefined;
    return fresh;
  };

  const stage = new Transform({
    ...BATCH_STREAM,
    transform(batch: ExtractedBatch, _enc, callback) {
      processBatch(batch).then(() => callback(), callback);
    },
    flush(callback) {
      landPrevious().then((last) => callback(null, last.length ? last : undefined), callback);
    },
  });
  return stage;
}
