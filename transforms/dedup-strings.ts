import CRC32 from 'crc-32';
import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { addOccurrences, decodeRecord, encodeNewRecord, encodeRecord, keyFromWords, readKeyWords, STRING_KEY_BYTES, StringWrites, writeStringKey, type StateStore, type StringRecord } from '../src/store.js';
import { KeyFilter, KeyTable, sameKeyWords } from '../src/key-filter.js';
import type { IngestCounters, NewString } from '../src/types.js';
import type { DistinctBatch } from './aggregate-strings.js';

/** What this stage needs of the store: ids for sources and fields, the id watermark, and string lookups and writes. */
export type DedupStore = Pick<StateStore, 'sourceId' | 'fieldId' | 'committedId' | 'heldStrings' | 'lookupStrings' | 'writeStrings' | 'isRunDone'>;

export interface DedupOptions {
  store: DedupStore;
  run: number;
  /** Whose counts these are: the input file's absolute path, or "stdin". */
  source: string;
  /** The configured embed_fields; DistinctBatch field indexes index into it. */
  embedFields: string[];
  counters: IngestCounters;
  /** Slots of the cache of strings kept in memory with their counts between batches (see below); a power of two. */
  cacheSize?: number;
}

/** A batch taken in, with the store reads of its strings under way while the batch before it is stored (see readAhead). */
interface Ahead {
  batch: DistinctBatch;
  keys: Buffer;
  /** Each string's key words (see readKeyWords), 4 per string. */
  words: Uint32Array;
  /** Per string, the index of its record among those read ahead, or -1: not read. */
  readAt: Int32Array;
  reading: Promise<(StringRecord | undefined)[]>;
}

/** The i-th of a batch's store keys, laid end to end. */
const keyAt = (keys: Buffer, i: number) => keys.subarray(i * STRING_KEY_BYTES, (i + 1) * STRING_KEY_BYTES);

/** A batch's write, landed or not, and what it carries (see overlayRecord). */
interface BatchWrite {
  write: Promise<void>;
  /** The batch's new strings, passed on when the write landed. */
  fresh: NewString[];
  /** Written keys to their index in `writes`. */
  index: KeyTable;
  writes: StringWrites;
  /** Each write's record, or only its bytes for a new string's (decoded if the next batch meets the string again). */
  records: (StringRecord | undefined)[];
}

/**
 * Strings whose counts are kept in memory between batches. At 1M catalog rows (130k recurring names, 200k recurring
 * titles) 262,144 slots rewrite 0.19M records where 32,768 rewrote 1.0M, and read 0.6M fewer: ~20% less wall time
 * (BENCHMARKS.md, seventh session). ~19 MB of typed arrays, a fixed size however long the input.
 */
const DEFAULT_CACHE = 262_144;
/**
 * Bytes of a cache slot's record: a length byte and up to 31 bytes of encodeRecord's varints, enough for a source's
 * counts in 6 fields of this run and the last, in most cases (longer records stay objects).
 */
const SLOT_RECORD_BYTES = 32;
/** A slot's length byte when its record is an object (lengths are below SLOT_RECORD_BYTES). */
const IN_OBJECTS = 0xff;
/** Cached records written per batch when the cache is flushed at the end. */
const FLUSH_BATCH = 8192;

/**
 * Keeps each distinct string once, across runs: one batched LevelDB read and one batched write per batch, never a
 * round trip per row. A string is found by the xxh3-128 of its text (see store.ts), so strings that share a CRC32
 * ("plumless" and "buckeroo") stay two strings. Passes on only the strings this work directory has never seen, each
 * with its new global id; every occurrence is counted per field and source.
 *
 * Strings seen again in a later batch stay in a cache, their counts updated in memory and written when they leave it or
 * at the end, so a string that recurs in every batch costs one read and one write per run instead of one of each per
 * batch. Counts written late are safe: a run's counts count only once the run completed, and a run completes only
 * after this stage has flushed. The cache is a fixed table: a string may sit in one of two slots picked by bits of its
 * hash, and one found again takes the first of them that is empty, or whose string was not found again since it came
 * in, or else the first; the string it puts out has its counts written with the batch. The second choice keeps strings
 * that recur (found again) over those met twice only. An array slot costs a fraction of a Map lookup plus the
 * reordering least-recently-used needs (those took ~0.3 s of the worker's time at 200k rows). Strings are told apart
 * by the 128-bit hash of their store key, as the store tells them apart, kept as four 32-bit words: comparing and
 * hashing texts cost the worker ~12% of its time.
 *
 * The write of batch N overlaps the lookup and work of batch N+1, and the store reads of batch N+1 overlap the work on
 * batch N (the worker waited ~4 s on reads at 1M rows with nothing else to do). Reads for N+1 start before N is worked
 * on, while the write of N-1 may be in flight: they cannot see what N will write, and they skip the strings that the
 * write of N-1 carries. So the cache answers first (a string that leaves it is written with the batch that puts it
 * out), then the records of the last two writes, kept in overlays; only then what was read ahead, or, for a string
 * skipped and no longer in memory, a read made then. Batch N's new strings go downstream only after their write
 * landed, so no later commit can cover ids whose records are not yet stored.
 */
export function dedupStrings(options: DedupOptions): Transform {
  const { store, run, counters, embedFields } = options;
  const slotMask = 2 ** Math.ceil(Math.log2(Math.max(1, options.cacheSize ?? DEFAULT_CACHE))) - 1;
  if (slotMask >= 2 ** 21) throw new RangeError('dedupStrings: cacheSize is at most 2^21 slots'); // see slotsInKeyOrder
  const source = store.sourceId(options.source);
  const fieldIds = embedFields.map((name) => store.fieldId(name));
  let nextId = store.committedId;
  const slots = slotMask + 1;
  /**
   * The slots' records as encodeRecord gives them, a length byte and then the bytes: no objects per cached string
   * (262k records as objects took ~230 MB more anonymous memory, growing until the cache was full, past 1M rows). A
   * length of 0 is an empty slot, IN_OBJECTS a record in `recordObjects`. Every cached record has occurrences to
   * write: counted in it, or in the slot's counts below.
   */
  const recordBytes = new Uint8Array(slots * SLOT_RECORD_BYTES);
  /** Records that do not fit in their slot's bytes, and those that came in with the batch in hand (packed after its counts). */
  const recordObjects = new Map<number, StringRecord>();
  const isEmpty = (slot: number) => recordBytes[slot * SLOT_RECORD_BYTES] === 0;
  const holdObject = (slot: number, record: StringRecord) => {
    recordObjects.set(slot, record);
    recordBytes[slot * SLOT_RECORD_BYTES] = IN_OBJECTS;
  };
  /**
   * Per slot, `stride` numbers: the key words (see readKeyWords) of its string, then its occurrences per embed field
   * not yet added to its record. A string found in the cache is counted here, next to the words just compared, and
   * its record is not touched until it leaves the cache (following a record's objects cost ~1.7 s at 1M rows).
   */
  const stride = 4 + embedFields.length;
  const slotData = new Uint32Array(slots * stride);
  /** 1: the slot's string was found in the cache since it came in. */
  const used = new Uint8Array(slots);
  const firstSlot = (words: Uint32Array, at: number) => words[at]! & slotMask;
  const secondSlot = (words: Uint32Array, at: number) => words[at + 1]! & slotMask;
  const holds = (slot: number, words: Uint32Array, at: number) => sameKeyWords(slotData, slot * stride, words, at);
  const countInSlot = (slot: number, field: number, n: number) => {
    const at = slot * stride + 4 + field;
    // Past 2^32 - 1 the counts so far go into the record first.
    if (slotData[at]! + n > 0xffffffff) holdObject(slot, slotRecord(slot));
    slotData[at] = slotData[at]! + n;
  };
  /** The slot's record with the slot's counts added (and cleared). */
  const slotRecord = (slot: number): StringRecord => {
    const base = slot * SLOT_RECORD_BYTES;
    const record = recordBytes[base] === IN_OBJECTS ? recordObjects.get(slot)! : decodeRecord(Buffer.from(recordBytes.buffer, base + 1, recordBytes[base]!));
    for (let f = 0, at = slot * stride + 4; f < embedFields.length; f++, at++) {
      if (!slotData[at]) continue;
      addOccurrences(store, record, source, run, fieldIds[f]!, slotData[at]!);
      slotData[at] = 0;
    }
    return record;
  };
  /** Empties the slot, returning its record with all its counts. */
  const takeRecord = (slot: number): StringRecord => {
    const record = slotRecord(slot);
    recordObjects.delete(slot);
    recordBytes[slot * SLOT_RECORD_BYTES] = 0;
    return record;
  };
  /** Moves the slot's record into its bytes, if it is an object that fits. */
  const packRecord = (slot: number) => {
    if (recordBytes[slot * SLOT_RECORD_BYTES] !== IN_OBJECTS) return;
    const bytes = encodeRecord(recordObjects.get(slot)!);
    if (bytes.length >= SLOT_RECORD_BYTES) return;
    recordBytes[slot * SLOT_RECORD_BYTES] = bytes.length;
    recordBytes.set(bytes, slot * SLOT_RECORD_BYTES + 1);
    recordObjects.delete(slot);
  };
  /** The slot holding the string whose key words are at `at` in `words`, or -1. Words first: most strings are not cached. */
  const cachedSlot = (words: Uint32Array, at: number) => {
    const a = firstSlot(words, at);
    if (holds(a, words, at)) return a;
    const b = secondSlot(words, at);
    return holds(b, words, at) ? b : -1;
  };
  /** Where a string found again goes in (see above). */
  const admissionSlot = (words: Uint32Array, at: number) => {
    const a = firstSlot(words, at);
    const b = secondSlot(words, at);
    if (isEmpty(a)) return a;
    if (isEmpty(b)) return b;
    if (!used[a]) return a;
    if (!used[b]) return b;
    used[b] = 0; // b kept its place once: it must be found again to keep it next time
    return a;
  };
  /** The last write begun (landed or not), and the one before it (landed). */
  let lastWrite: BatchWrite | undefined;
  let previousWrite: BatchWrite | undefined;
  // Keys this run wrote, when the store held no string before it: a string whose key is not among them is new
  // without asking LevelDB (on a first run most lookups find nothing: 427k of 549k at 200k rows).
  const writtenKeys = store.heldStrings ? undefined : new KeyFilter();

  /** A string known before this batch: counted as distinct and known once per run. */
  const known = (record: StringRecord) => {
    if (record.lr !== run) {
      record.lr = run;
      counters.distinct++;
      counters.known++;
    }
  };

  /** The record of the string whose key words are at `at` in `words`, if the write carries it. */
  const recordIn = (write: BatchWrite | undefined, words: Uint32Array, at: number): StringRecord | undefined => {
    if (!write) return undefined;
    const w = write.index.get(words, at);
    return w < 0 ? undefined : (write.records[w] ??= decodeRecord(write.writes.values[w]!));
  };
  /** The latest record of the string written by one of the last two writes, if any. */
  const overlayRecord = (words: Uint32Array, at: number) => recordIn(lastWrite, words, at) ?? recordIn(previousWrite, words, at);

  /**
   * Takes a batch in: makes its strings' store keys and starts reading the records of those that are neither cached nor
   * in the last write begun (the overlays will have those) and, on a first run, that the store may hold. Called before
   * the batch before it is worked on.
   */
  const readAhead = (batch: DistinctBatch): Ahead => {
    const n = batch.texts.length;
    const keys = Buffer.allocUnsafe(n * STRING_KEY_BYTES);
    const view = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
    for (let i = 0; i < n; i++) writeStringKey(batch.texts[i]!, view, i * STRING_KEY_BYTES);
    const words = new Uint32Array(n * 4);
    const readAt = new Int32Array(n).fill(-1);
    const readKeys: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      readKeyWords(keys, i, words, i * 4);
      if (cachedSlot(words, i * 4) >= 0 || (lastWrite && lastWrite.index.get(words, i * 4) >= 0)) continue;
      if (writtenKeys && !writtenKeys.mayHave(words, i * 4)) continue;
      readAt[i] = readKeys.length;
      readKeys.push(keyAt(keys, i));
    }
    const reading = readKeys.length ? store.lookupStrings(readKeys) : Promise.resolve([]);
    reading.catch(() => {}); // awaited by processBatch; this keeps a failure meanwhile from being "unhandled"
    return { batch, keys, words, readAt, reading };
  };

  const processBatch = async (ahead: Ahead): Promise<void> => {
    const { batch, keys, words } = ahead;
    const n = batch.texts.length;
    const records = new Array<StringRecord>(n);
    const misses: number[] = [];
    /**
     * Strings found in the store or the overlay, to cache once the whole batch is looked up: a string put out of the
     * cache before its own turn in the batch would be read again from the store, without its latest counts.
     */
    const admitted: number[] = [];
    /** Cache slot of each string found in the cache (-1: not found there). */
    const hits = new Int32Array(n).fill(-1);

    for (let i = 0; i < n; i++) {
      const slot = cachedSlot(words, i * 4);
      if (slot >= 0) {
        // Counted in the slot; its record was already counted as known when it came in.
        used[slot] = 1;
        hits[i] = slot;
        countInSlot(slot, batch.firstField[i]!, batch.count[i]!);
        continue;
      }
      const record = overlayRecord(words, i * 4);
      if (record) {
        admitted.push(i);
        known(record);
        records[i] = record;
      } else misses.push(i);
    }
    // Before any string comes into the cache and puts another out (with its counts).
    for (let m = 0; m < batch.more.length; m += 3) if (hits[batch.more[m]!]! >= 0) countInSlot(hits[batch.more[m]!]!, batch.more[m + 1]!, batch.more[m + 2]!);
    const found = await lookUp(misses, ahead);

    const fresh: NewString[] = [];
    /** The new strings' texts as JSON, for the text log and (passed on) their request lines: escaped once. */
    const newJson: string[] = [];
    const firstNewId = nextId;
    // New strings seen in one field only (most) get their record's bytes straight away, no record object: ids by index.
    const oneField = new Uint8Array(n).fill(1);
    for (let m = 0; m < batch.more.length; m += 3) oneField[batch.more[m]!] = 0;
    const newIds = new Float64Array(n).fill(-1);
    for (let j = 0; j < misses.length; j++) {
      const i = misses[j]!;
      const record = found[j];
      if (record) {
        known(record);
        admitted.push(i);
        records[i] = record;
        continue;
      }
      const text = batch.texts[i]!;
      const id = nextId++;
      if (oneField[i]) newIds[i] = id;
      else records[i] = { id, f: fieldIds[batch.firstField[i]!]!, lr: run, src: [] };
      counters.distinct++;
      counters.newStrings++;
      const json = JSON.stringify(text);
      newJson.push(json);
      // Its CRC32 for the custom id, made for new strings only: 1.8M of the 3.8M distinct strings batches held at 1M rows.
      fresh.push({ id, crc: CRC32.str(text) >>> 0, field: embedFields[batch.firstField[i]!]!, text, json, line: batch.lines[i] || undefined });
    }
    /** Strings with counts not yet written that left the cache (their records, and their key words): written with this batch, after its counts. */
    const evicted: StringRecord[] = [];
    const evictedWords = new Uint32Array(admitted.length * 4);
    const admittedSlots = new Int32Array(admitted.length);
    admitted.forEach((i, a) => {
      const slot = (admittedSlots[a] = admissionSlot(words, i * 4));
      if (!isEmpty(slot)) {
        evictedWords.set(slotData.subarray(slot * stride, slot * stride + 4), evicted.length * 4);
        evicted.push(takeRecord(slot));
      }
      holdObject(slot, records[i]!);
      slotData.set(words.subarray(i * 4, i * 4 + 4), slot * stride);
      used[slot] = 0;
    });
    for (let i = 0; i < n; i++) if (newIds[i]! < 0 && hits[i]! < 0) addOccurrences(store, records[i]!, source, run, fieldIds[batch.firstField[i]!]!, batch.count[i]!);
    for (let m = 0; m < batch.more.length; m += 3) if (hits[batch.more[m]!]! < 0) addOccurrences(store, records[batch.more[m]!]!, source, run, fieldIds[batch.more[m + 1]!]!, batch.more[m + 2]!);
    // The records that came in have this batch's counts now: into their slots' bytes.
    for (const slot of admittedSlots) packRecord(slot);

    // New strings' records now, with their counts; they stay visible to the next batch until the write lands.
    const writes = new StringWrites();
    const index = new KeyTable(misses.length + evicted.length);
    const writtenRecords: (StringRecord | undefined)[] = [];
    const write = (key: Buffer, keyWords: Uint32Array, at: number, record: StringRecord | undefined, value: Buffer) => {
      index.set(keyWords, at, writes.keys.length);
      writes.put(key, value);
      writtenRecords.push(record);
    };
    for (let j = 0; j < misses.length; j++) {
      if (found[j]) continue;
      const i = misses[j]!;
      // Only new keys: a string put out of the cache was written before, so its key is in the filter already.
      writtenKeys?.add(words, i * 4);
      const id = newIds[i]!;
      const key = keyAt(keys, i);
      if (id >= 0) write(key, words, i * 4, undefined, encodeNewRecord(id, fieldIds[batch.firstField[i]!]!, run, source, batch.count[i]!));
      else write(key, words, i * 4, records[i], encodeRecord(records[i]!));
    }
    evicted.forEach((record, e) => write(keyFromWords(evictedWords, e * 4), evictedWords, e * 4, record, encodeRecord(record)));

    // One write in flight at a time keeps writes in order.
    const previous = await landPrevious();
    if (previous.length) stage.push(previous);
    lastWrite = { write: store.writeStrings(writes, firstNewId, newJson), fresh, index, writes, records: writtenRecords };
  };

  /**
   * The stored records of the batch's strings misses[j] (neither cached nor in the overlays): as read ahead, or read now
   * if they were not (when readAhead found them cached or in the write then in flight, and they are no longer). Only
   * those the store may hold are read when it held none before this run.
   */
  const lookUp = async (misses: number[], { keys, words, readAt, reading }: Ahead): Promise<(StringRecord | undefined)[]> => {
    const readEarly = await reading;
    const found = new Array<StringRecord | undefined>(misses.length);
    const late: number[] = [];
    for (let j = 0; j < misses.length; j++) {
      const i = misses[j]!;
      if (readAt[i]! >= 0) found[j] = readEarly[readAt[i]!];
      else if (!writtenKeys || writtenKeys.mayHave(words, i * 4)) late.push(j);
    }
    if (late.length) (await store.lookupStrings(late.map((j) => keyAt(keys, misses[j]!)))).forEach((record, q) => (found[late[q]!] = record));
    return found;
  };

  /** Waits for the last write begun; its records stay in an overlay for one more batch (see readAhead). */
  const landPrevious = async (): Promise<NewString[]> => {
    if (!lastWrite) return [];
    await lastWrite.write;
    previousWrite = lastWrite;
    lastWrite = undefined;
    return previousWrite.fresh;
  };

  /**
   * Writes the counts still in the cache (the run is not complete before they are stored), in about key order: LevelDB
   * inserts keys in order ~40% faster than at random (each search goes down the path the last one warmed), and this
   * is the run's tail, where nothing else runs (262k records, 0.65 s at 1M rows at random).
   */
  const flushCache = async (): Promise<void> => {
    let writes = new StringWrites();
    for (const slot of slotsInKeyOrder()) {
      const record = takeRecord(slot);
      writes.put(keyFromWords(slotData, slot * stride), encodeRecord(record));
      if (writes.keys.length >= FLUSH_BATCH) {
        await store.writeStrings(writes, nextId, []);
        writes = new StringWrites();
      }
    }
    await store.writeStrings(writes, nextId, []);
  };

  /** The occupied cache slots, ordered by the first 32 bits of their keys (the hash's first 4 bytes, big-endian). */
  const slotsInKeyOrder = (): Float64Array => {
    const order = new Float64Array(slots);
    let n = 0;
    for (let slot = 0; slot < slots; slot++) {
      if (isEmpty(slot)) continue;
      const w = slotData[slot * stride]!;
      const first32 = ((w & 0xff) * 0x1000000 + ((w >>> 8) & 0xff) * 0x10000 + ((w >>> 16) & 0xff) * 0x100 + (w >>> 24));
      order[n++] = first32 * slots + slot; // below 2^53 up to 2^21 slots
    }
    return order.subarray(0, n).sort().map((x) => x % slots);
  };

  /** The batch taken in last, its reads under way: worked on when the next one comes in, or at the end. */
  let ahead: Ahead | undefined;
  const processAhead = async (): Promise<void> => {
    const batch = ahead;
    ahead = undefined;
    if (batch) await processBatch(batch);
  };

  const stage = new Transform({
    ...BATCH_STREAM,
    transform(batch: DistinctBatch, _enc, callback) {
      const next = readAhead(batch);
      processAhead().then(() => {
        ahead = next;
        callback();
      }, callback);
    },
    flush(callback) {
      processAhead()
        .then(landPrevious)
        .then(async (last) => {
          // The last new strings go on to their request file while LevelDB takes the cache's records.
          if (last.length) this.push(last);
          await flushCache();
        })
        .then(() => callback(), callback);
    },
  });
  return stage;
}
