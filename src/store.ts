/**
 * The work directory's state, in one LevelDB (the `level` package). LevelDB's own lock makes every command that opens
 * the store the single writer of its work directory.
 *
 * Layout (each a sublevel, JSON values unless said):
 *   h!<xxh3-128>    StringRecord   a distinct string, keyed by the 16 bytes of the 128-bit xxh3 hash of its UTF-8 text
 *                                   (binary key and value): its id, first field and counts. The hash is the seed's
 *                                   hash_value, which also names the string's Weaviate objects, so the store keeps two
 *                                   strings apart exactly when Weaviate can; strings that share a CRC32 ("plumless",
 *                                   "buckeroo") are two records. Small records keep dedup cheap: the texts
 *                                   live apart, written once, in id order.
 *   c!<first id>    TextChunk      where the texts of the new strings of one dedup batch (ids <first id> on, in order)
 *                                   lie in the text log, <work_dir>/texts.jsonl: one JSON array per line, appended
 *   f!<seq>         RequestFile    a finished request file
 *   r!<run>         RunRecord      one prepare run
 *   k!<id>          SkipRecord     a string that will not be embedded, and why
 *   b!<seq>         JobRecord      the Batch API job of request file <seq>: upload, batch, status, downloads
 *   x!<id>          FailureRecord  a string whose request failed, why, and how often (deleted once it succeeds)
 *   n!<t>:<id>:<f>  1              the (string, field) object was acknowledged by sink target <t> (a Weaviate URL and
 *                                   collection, or a JSONL path: see targetId); marks of layout 3 before targets,
 *                                   <id>:<f>, name none and are not read
 *   j!<t>:<id>:<f>  1              ... was refused by target <t> for good (the reason is in index_rejects.jsonl); an
 *                                   acknowledgement later removes it
 *   m!skippedCount, m!failedBy, m!objectsBy   the ledger's counters (see src/ledger.ts), written in the same atomic
 *                                   write as what they count, so they are read without a scan at 31M strings
 *   m!<name>        meta values    workdir id, id and file counters, the field and source name tables, layout version
 *
 * Crash safety rests on one watermark, `committedId`: ids below it belong to request files that were completely
 * written (or to strings skipped for good). A run that dies leaves strings with ids at or above the watermark; opening
 * the store removes them (found through the text chunks, which double as the journal: a chunk's texts reach the text log
 * before the one atomic batch that writes its pointer and its strings' records), so the next run sees those strings as
 * new and hands out the same ids again in the same order: a rerun over the same input writes the same request lines as
 * an uninterrupted run. The log is cut back to its last committed chunk when the store opens.
 *
 * Why the texts live outside LevelDB: they are most of the bytes (217 of 331 MB at 1M rows) and are written once and
 * read in id order, so LevelDB's write-ahead log, memtable, compression and compactions only cost time for them
 * (1M rows: 33.2-35.6 s with them in LevelDB, 31.3-31.5 s in the log). What stays in LevelDB is small records under
 * random keys, which snappy cannot shrink, so compression is off (at 1M rows snappy took ~7% of the process's CPU).
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, chmodSync, closeSync, constants, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { xxh3 } from '@node-rs/xxhash';
import { Level } from 'level';
import { StateError } from './errors.js';
import { TextCache } from './text-cache.js';
import { workPaths } from './workdir.js';

/** Occurrences of a string per field (indexed by field id), from one input source, in its latest run and the one before. */
export interface SourceCounts {
  /** Source id (see sourceId()). */
  s: number;
  /** Run that wrote `c`. */
  r: number;
  c: number[];
  /** The previous completed run and its counts, kept until run `r` is known to have completed. */
  pr?: number;
  pc?: number[];
}

/** A distinct string as stored (its text is kept apart, in the text chunks). */
export interface StringRecord {
  /** Global index, unique across everything this work directory has written; the last part of the custom_id. */
  id: number;
  /** Field id of the field the string was first seen in; names it in the custom_id. */
  f: number;
  /** The last run that saw this string. */
  lr: number;
  /** Counts per input source. */
  src: SourceCounts[];
}

/** Where one chunk's texts are in the text log: byte offset and length of its line, and how many of its texts count. */
export interface TextChunk {
  o: number;
  n: number;
  /** Texts of the line that belong to the store: a dead run's uncommitted tail is dropped by lowering this. */
  k: number;
}

/** A string read back by id: its text and record. */
export interface StoredString {
  id: number;
  text: string;
  /** Its hash_value (32 hex digits), read off its store key: the xxh3 is not computed again. */
  hash: string;
  record: StringRecord;
}

export interface RequestFile {
  seq: number;
  name: string;
  lines: number;
  inputs: number;
  tokens: number;
  /** `tokens` is partly estimated (prepare counts exactly only where it decides); submit counts it exactly first. */
  tokensEstimated?: boolean;
  bytes: number;
  sha256: string;
  firstId: number;
  lastId: number;
  model: string;
  createdAt: string;
  run: number;
  /** Written by `retry` from failed lines (ids not new, not contiguous). */
  retry?: boolean;
}

export interface RunRecord {
  id: number;
  source: string;
  startedAt: string;
  finishedAt?: string;
  state: 'running' | 'done';
  /** The run changed the counts of strings the store held before it (so objects already sent may be stale). */
  changedCounts?: boolean;
}

export interface SkipRecord {
  reason: string;
  field: string;
  tokens?: number;
}

/** A request file's way: queued -> uploaded -> creating -> active -> ended -> downloaded, or queued -> realtime -> downloaded. */
export type JobState = 'queued' | 'uploaded' | 'creating' | 'active' | 'ended' | 'downloaded' | 'realtime';

export interface JobRecord {
  seq: number;
  state: JobState;
  inputFileId?: string;
  batchId?: string;
  /** When a create call was sent (ms): a crash after it is reconciled through the batch list. */
  intentAt?: number;
  createdAt?: number;
  status?: string;
  counts?: { total: number; completed: number; failed: number };
  inProgressAt?: number | null;
  outputFileId?: string | null;
  errorFileId?: string | null;
  /** Times the batch failed on a queue limit and went back to the queue, and when it may be tried again (ms). */
  requeues: number;
  notBefore?: number;
  /** Why the batch failed as a whole (validation), when it did. */
  error?: string;
  /** Downloaded result files (names in results/) and their line counts. */
  outputFile?: string;
  errorFile?: string;
  outputLines?: number;
  errorLines?: number;
  usageTokens?: number;
  /**
   * Sink targets (see StateStore.targetId) that took every object of the output file: each was acknowledged, or
   * refused for good (then the target is in `rejectsTo` too). A file is indexed per target: indexing into one never
   * hides work from another.
   */
  indexedTo?: number[];
  rejectsTo?: number[];
  /** Per target in indexedTo: the counts generation (see StateStore.countsGeneration) its objects were sent at. */
  indexedGen?: Record<string, number>;
  /**
   * The output file's objects, and its strings that make none (no source has them any more), as of its last count
   * (when downloaded, and at each whole index pass); and per target in indexedTo, its strings with an object refused.
   */
  objects?: number;
  objectless?: number;
  refusedStrings?: Record<string, number>;
}

export interface FailureRecord {
  customId: string;
  /** The request file whose line failed last. */
  seq: number;
  code: string;
  message: string;
  retryable: boolean;
  attempts: number;
  /** The retry request file this string is queued in, if any. */
  retrySeq?: number;
}

interface Meta {
  workdirId: string;
  committedId: number;
  nextSeq: number;
  lastRun: number;
  /** Field names by field id, and source names by source id: entries store the small ids. */
  fields: string[];
  sources: string[];
  /** Sink target labels by target id (see targetId). */
  targets: string[];
  /** Ledger counters, kept with the state they count (see ledgerCounts). */
  skippedCount: number;
  failedBy: Record<string, FailureTally>;
  objectsBy: Record<string, ObjectTally>;
}

/** Failed strings of one original request file: permanent ones, and retryable ones by attempts made (index). */
export interface FailureTally {
  p: number;
  r: number[];
}

/** Objects of one sink target: acknowledged, and refused for good (not acknowledged since). */
export interface ObjectTally {
  a: number;
  r: number;
}

/** What the store counts for the ledger (see src/ledger.ts), read without a scan. */
export interface LedgerCounts {
  skipped: number;
  /** Failed strings by the original (not retry) request file they were prepared in. */
  failedBy: ReadonlyMap<number, FailureTally>;
  objects(target: number): ObjectTally;
}

const pad = (n: number) => String(n).padStart(12, '0');

/** One operation of an atomic write across sublevels (or, with binary encodings, on the root with a full key). */
interface BatchOp {
  type: 'put' | 'del';
  sublevel?: unknown;
  key: string | Buffer;
  value?: unknown;
  keyEncoding?: 'buffer' | 'utf8';
  valueEncoding?: 'buffer' | 'json';
}

/** String records to write: store keys (see stringKey) and encoded records (see encodeRecord), side by side. */
export class StringWrites {
  readonly keys: Buffer[] = [];
  readonly values: Buffer[] = [];
  put(key: Buffer, value: Buffer): void {
    this.keys.push(key);
    this.values.push(value);
  }
}

/**
 * classic-level's chained batch with its implementation methods: `_put` adds encoded bytes to the native batch, `_write`
 * writes it and `_clear` empties it (abstract-level's public `write` would skip a batch whose entries all came through
 * `_put`, and close the batch).
 */
interface NativeChainedBatch {
  _clear(): void;
  _put(key: Buffer, value: Buffer): void;
  put(key: string, value: unknown, options: object): void;
  _write(options: object): Promise<void>;
}

/** LevelDB table files kept open (and mapped) by default: random reads need them (64 read a 4M-row store 4.2x slower). */
const READING_OPEN_FILES = 1000;
/** ... and while `prepare` fills a store that held no strings, which reads little (see KeyFilter). */
const FILLING_OPEN_FILES = 64;

/**
 * Table files to keep open for `setting` (state_max_open_files; null: automatic) when `filling` an empty store. The
 * mapped pages of open files count in RSS and grow with the store: a first prepare of 4M rows peaked at 648 MB RSS
 * against 399 MB at 1M rows with 1,000 files, at 436 against 390 MB with 64, 5% slower (BENCHMARKS.md).
 */
export function maxOpenFilesFor(setting: number | null, filling: boolean): number {
  return setting ?? (filling ? FILLING_OPEN_FILES : READING_OPEN_FILES);
}

/** Version of the layout above; a store written in another layout is refused with a clear message. */
const LAYOUT = 3;
const STRING_PREFIX = Buffer.from('!h!');
const STRING_PREFIX_END = Buffer.from('!h"');
/** Where a string's hash starts in its store key. */
export const STRING_HASH_OFFSET = STRING_PREFIX.length;
const BINARY = { keyEncoding: 'buffer', valueEncoding: 'buffer' } as const;
const JSON_ENTRY = { keyEncoding: 'utf8', valueEncoding: 'json' } as const;
/** The largest text log line buffer kept from one chunk to the next. */
const TEXT_BUFFER_MAX = 4 * 1024 * 1024;
/**
 * Bytes of text chunks kept while reading strings back by id (results, retry; see TextCache): a request file's
 * strings in full (50,000 strings of ~300 bytes of JSON each fill 15 MB), whatever the order of its result lines.
 */
const TEXT_CACHE_BYTES = 64 * 1024 * 1024;

export class StateStore {
  readonly dir: string;
  readonly #db: Level<string, unknown>;
  readonly texts;
  readonly files;
  readonly runs;
  readonly skips;
  readonly jobs;
  readonly failures;
  readonly indexed;
  readonly rejected;
  readonly #meta;
  #state!: Meta;
  /** Run id -> completed. Runs are few (one per prepare), so they are kept in memory. */
  readonly #runDone = new Map<number, boolean>();
  /** Source -> its latest completed run: the run whose counts are current for that source. */
  readonly #latestDone = new Map<string, number>();
  #heldStrings = false;
  /** The native batch writeStrings reuses, and whether a write of it is in flight. */
  #stringBatch: NativeChainedBatch | undefined;
  #writingStrings = false;
  /** Recently read text chunks. */
  readonly #textCache = new TextCache(TEXT_CACHE_BYTES);
  /** The text log (see the header): its descriptor, and where the next chunk goes (the end of the last committed one). */
  #textLog = -1;
  #textEnd = 0;
  /** Reused for each text log line (see #textLine). */
  #textBuffer = Buffer.alloc(0);
  /** First ids of the original request files, ascending, and their sequence numbers: a failed string's file. */
  readonly #originFirst: number[] = [];
  readonly #originSeq: number[] = [];
  /** Marks and failures are counted as they are written: one write at a time, so no two count the same entry. */
  #tally: Promise<unknown> = Promise.resolve();

  private constructor(workDir: string, cacheMB: number, maxOpenFiles: number) {
    this.dir = workDir;
    // 32 MB memtables (LevelDB's default is 4 MB): fewer, larger level-0 files to compact while ingest writes. With
    // ingest's lookups 8 MB measured no faster at 1M rows (32.2-33.3 against 30.5-34.3 s, more system time; 38.5
    // against 33.4 s while the texts were still in LevelDB), though writes alone go faster.
    this.#db = new Level<string, unknown>(path.join(workDir, 'state'), { valueEncoding: 'json', cacheSize: cacheMB * 1024 * 1024, writeBufferSize: 32 * 1024 * 1024, maxOpenFiles, compression: false });
    this.texts = this.#db.sublevel<string, TextChunk>('c', { valueEncoding: 'json' });
    this.files = this.#db.sublevel<string, RequestFile>('f', { valueEncoding: 'json' });
    this.runs = this.#db.sublevel<string, RunRecord>('r', { valueEncoding: 'json' });
    this.skips = this.#db.sublevel<string, SkipRecord>('k', { valueEncoding: 'json' });
    this.jobs = this.#db.sublevel<string, JobRecord>('b', { valueEncoding: 'json' });
    this.failures = this.#db.sublevel<string, FailureRecord>('x', { valueEncoding: 'json' });
    this.indexed = this.#db.sublevel<string, number>('n', { valueEncoding: 'json' });
    this.rejected = this.#db.sublevel<string, number>('j', { valueEncoding: 'json' });
    this.#meta = this.#db.sublevel<string, unknown>('m', { valueEncoding: 'json' });
  }

  /**
   * `cacheMB`: LevelDB's block cache. LevelDB reads its table files through mmap (up to 1,000 of them), and blocks read
   * that way are not cached, so a big cache buys little: 8 MB measured as fast as 64 MB for ingest (10.1-10.3 s vs
   * 10.6-11.1 s at 200k rows) with 30 MB less peak RSS.
   */
  static async open(workDir: string, options: { cacheMB?: number; maxOpenFiles?: number | null } = {}): Promise<StateStore> {
    mkdirSync(workDir, { recursive: true, mode: 0o700 });
    const store = new StateStore(workDir, options.cacheMB ?? 8, options.maxOpenFiles ?? READING_OPEN_FILES);
    try {
      await store.#db.open();
    } catch (err) {
      const code = (err as { cause?: { code?: string } }).cause?.code;
      if (code === 'LEVEL_LOCKED')
        throw new StateError('STATE_LOCKED', `work directory ${workDir} is in use by another embatch process; wait for it to finish`, { cause: err });
      throw new StateError('STATE_OPEN', `cannot open the state store in ${workDir}: ${(err as Error).message}`, { cause: err });
    }
    chmodSync(path.join(workDir, 'state'), 0o700);
    try {
      await store.#load();
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
    return store;
  }

  async #load(): Promise<void> {
    const [workdirId, committedId, nextSeq, lastRun, fields, sources, layout, targets] = await this.#meta.getMany(['workdirId', 'committedId', 'nextSeq', 'lastRun', 'fields', 'sources', 'layout', 'targets']);
    if (workdirId !== undefined && layout !== LAYOUT)
      throw new StateError('STATE_LAYOUT', `the work directory ${this.dir} was written by another version of embatch (state layout ${String(layout ?? 1)}, this one reads ${LAYOUT}); use a new work directory`);
    this.#state = {
      workdirId: (workdirId as string | undefined) ?? randomUUID(),
      committedId: (committedId as number | undefined) ?? 0,
      nextSeq: (nextSeq as number | undefined) ?? 1,
      lastRun: (lastRun as number | undefined) ?? 0,
      fields: (fields as string[] | undefined) ?? [],
      sources: (sources as string[] | undefined) ?? [],
      targets: (targets as string[] | undefined) ?? [],
      skippedCount: 0,
      failedBy: {},
      objectsBy: {},
    };
    if (workdirId === undefined) await this.#meta.batch([{ type: 'put', key: 'workdirId', value: this.#state.workdirId }, { type: 'put', key: 'layout', value: LAYOUT }]);
    for await (const [, run] of this.runs.iterator()) this.#noteRun(run);
    // Opened only now that LevelDB's lock is held: one process writes the log, as it writes the store.
    this.#textLog = openSync(workPaths(this.dir).texts, constants.O_RDWR | constants.O_CREAT, 0o600);
    await this.#dropUncommitted();
    await this.#cutTextLog();
    for await (const _ of this.#db.keys({ gte: STRING_PREFIX, lt: STRING_PREFIX_END, limit: 1, keyEncoding: 'buffer' } as never)) this.#heldStrings = true;
    for await (const file of this.files.values()) if (!file.retry) this.#noteOrigin(file);
    await this.#loadTallies();
  }

  /**
   * The ledger counters. A work directory written before they existed gets them counted once, here (a scan of its
   * skips, failures and marks), and kept from then on.
   */
  async #loadTallies(): Promise<void> {
    const [skippedCount, failedBy, objectsBy] = await this.#meta.getMany(['skippedCount', 'failedBy', 'objectsBy']);
    if (skippedCount !== undefined && failedBy !== undefined && objectsBy !== undefined) {
      Object.assign(this.#state, { skippedCount, failedBy, objectsBy });
      return;
    }
    let skipped = 0;
    for await (const _ of this.skips.keys()) skipped++;
    const failed: Record<string, FailureTally> = {};
    for await (const [key, f] of this.failures.iterator()) tallyFailure(failed, this.#originOf(Number(key)), f, 1);
    const objects: Record<string, ObjectTally> = {};
    // Marks of the layout before targets (<id>:<field>) name no target and are not counted.
    const targetOf = (key: string) => (key.split(':').length === 3 ? (objects[key.slice(0, key.indexOf(':'))] ??= { a: 0, r: 0 }) : undefined);
    for await (const key of this.indexed.keys()) {
      const t = targetOf(key);
      if (t) t.a++;
    }
    for await (const key of this.rejected.keys()) {
      const t = targetOf(key);
      if (t && (await this.indexed.get(key)) === undefined) t.r++;
    }
    Object.assign(this.#state, { skippedCount: skipped, failedBy: failed, objectsBy: objects });
    await this.#meta.batch([
      { type: 'put', key: 'skippedCount', value: skipped },
      { type: 'put', key: 'failedBy', value: failed },
      { type: 'put', key: 'objectsBy', value: objects },
    ]);
  }

  #noteOrigin(file: RequestFile): void {
    this.#originFirst.push(file.firstId);
    this.#originSeq.push(file.seq);
  }

  /** The original request file of a string id (0 if none: only ids in request files fail). */
  #originOf(id: number): number {
    let lo = 0;
    let hi = this.#originFirst.length - 1;
    let found = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.#originFirst[mid]! <= id) {
        found = this.#originSeq[mid]!;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  /** The ledger's counters as the store keeps them (see src/ledger.ts). */
  ledgerCounts(): LedgerCounts {
    const { skippedCount, failedBy, objectsBy } = this.#state;
    return {
      skipped: skippedCount,
      failedBy: new Map(Object.entries(failedBy).map(([seq, t]) => [Number(seq), { p: t.p, r: [...t.r] }])),
      objects: (target) => ({ ...(objectsBy[target] ?? { a: 0, r: 0 }) }),
    };
  }

  /** Runs `fn` after every earlier counted write (see #tally). */
  #counted<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tally.then(fn);
    this.#tally = next.catch(() => {});
    return next;
  }

  /**
   * Removes strings a dead run assigned ids to but never committed (see the header): the records of the texts in
   * chunks at or above the watermark, and those chunks (or their uncommitted tail). One atomic write per chunk, so a
   * crash here only leaves less to do next time.
   */
  async #dropUncommitted(): Promise<void> {
    const committed = this.#state.committedId;
    let from = pad(committed);
    for await (const key of this.texts.keys({ lte: from, reverse: true, limit: 1 })) from = key;
    for await (const [key, chunk] of this.texts.iterator({ gte: from })) {
      const first = Number(key);
      const kept = Math.max(0, committed - first);
      if (kept >= chunk.k) continue;
      let texts: string[];
      try {
        texts = this.#readChunk(first, chunk);
      } catch (err) {
        // A power cut kept this pointer but not its texts (they are flushed only at the commit that covers them).
        if (!(err instanceof StateError)) throw err;
        await this.#dropFromIds(committed);
        return;
      }
      const ops: BatchOp[] = texts.slice(kept).map((text) => ({ type: 'del', key: stringKey(text), keyEncoding: 'buffer' }));
      ops.push(kept ? { type: 'put', sublevel: this.texts, key, value: { ...chunk, k: kept } } : { type: 'del', sublevel: this.texts, key });
      await this.#db.batch(ops as never);
    }
  }

  /**
   * Removes every string with an id at or above `committed`, found by a scan of the string records (their texts may
   * be lost), and the text chunks that begin at or above it. Only after a power cut lost uncommitted texts.
   */
  async #dropFromIds(committed: number): Promise<void> {
    let ops: BatchOp[] = [];
    for await (const [key, value] of this.#db.iterator({ gte: STRING_PREFIX, lt: STRING_PREFIX_END, keyEncoding: 'buffer', valueEncoding: 'buffer' } as never) as AsyncIterable<[Buffer, Buffer]>) {
      if (decodeRecord(value).id < committed) continue;
      ops.push({ type: 'del', key, keyEncoding: 'buffer' });
      if (ops.length >= 10_000) {
        await this.#db.batch(ops as never);
        ops = [];
      }
    }
    for await (const [key, chunk] of this.texts.iterator({ lt: pad(committed), reverse: true, limit: 1 }))
      if (Number(key) + chunk.k > committed) ops.push({ type: 'put', sublevel: this.texts, key, value: { ...chunk, k: committed - Number(key) } });
    for await (const key of this.texts.keys({ gte: pad(committed) })) ops.push({ type: 'del', sublevel: this.texts, key });
    await this.#db.batch(ops as never);
  }

  /**
   * Cuts the text log back to the end of its last chunk: what lies beyond belongs to no chunk (a dead run's, whose
   * pointers are gone, or one whose batch never landed). A log shorter than its chunks say means texts were lost.
   */
  async #cutTextLog(): Promise<void> {
    for await (const chunk of this.texts.values({ reverse: true, limit: 1 })) this.#textEnd = chunk.o + chunk.n;
    const size = fstatSync(this.#textLog).size;
    if (size < this.#textEnd)
      throw new StateError('STATE_TEXTS', `the text log ${workPaths(this.dir).texts} is shorter (${size} bytes) than the store says (${this.#textEnd}): texts were lost (was it truncated or replaced?); use a new work directory`);
    if (size > this.#textEnd) ftruncateSync(this.#textLog, this.#textEnd);
  }

  /** The texts of one chunk, read from the text log. */
  #readChunk(first: number, chunk: TextChunk): string[] {
    const bytes = Buffer.allocUnsafe(chunk.n);
    for (let at = 0; at < chunk.n; ) {
      const read = readSync(this.#textLog, bytes, at, chunk.n - at, chunk.o + at);
      if (read === 0) throw new StateError('STATE_TEXTS', `the text log ${workPaths(this.dir).texts} ends inside the texts of ids ${first} on; use a new work directory`);
      at += read;
    }
    try {
      return (JSON.parse(bytes.toString('utf8')) as string[]).slice(0, chunk.k);
    } catch (err) {
      throw new StateError('STATE_TEXTS', `the text log ${workPaths(this.dir).texts} is damaged at byte ${chunk.o} (the texts of ids ${first} on); use a new work directory`, { cause: err });
    }
  }

  /** The id of a field name, added to the table on first use (persisted with the next write of new strings). */
  fieldId(name: string): number {
    let id = this.#state.fields.indexOf(name);
    if (id === -1) id = this.#state.fields.push(name) - 1;
    return id;
  }

  /** The id of a field name already in the table, or undefined (nothing is added, unlike fieldId). */
  findFieldId(name: string): number | undefined {
    const id = this.#state.fields.indexOf(name);
    return id === -1 ? undefined : id;
  }

  /** The original request file (sequence number) a string id was prepared in; 0 for none. */
  originOf(id: number): number {
    return this.#originOf(id);
  }

  fieldName(id: number): string {
    return this.#state.fields[id] ?? `field${id}`;
  }

  sourceId(name: string): number {
    let id = this.#state.sources.indexOf(name);
    if (id === -1) id = this.#state.sources.push(name) - 1;
    return id;
  }

  get workdirId(): string {
    return this.#state.workdirId;
  }
  /** Ids below this belong to finished request files or to strings skipped for good. */
  get committedId(): number {
    return this.#state.committedId;
  }
  /** Whether the store held any string when opened (committed ones: a dead run's are dropped first). */
  get heldStrings(): boolean {
    return this.#heldStrings;
  }
  get nextSeq(): number {
    return this.#state.nextSeq;
  }

  #noteRun(run: RunRecord): void {
    this.#runDone.set(run.id, run.state === 'done');
    if (run.state === 'done' && (this.#latestDone.get(run.source) ?? 0) < run.id) this.#latestDone.set(run.source, run.id);
    if (run.state === 'done' && run.changedCounts) this.#countsGeneration = Math.max(this.#countsGeneration, run.id);
  }

  #countsGeneration = 0;
  /**
   * The last completed run that changed counts of strings held before it (0: none did). A result file taken by a
   * target at an older generation is read again by `index`, which sends the objects whose frequency changed.
   */
  get countsGeneration(): number {
    return this.#countsGeneration;
  }

  isRunDone(run: number): boolean {
    return this.#runDone.get(run) === true;
  }

  async beginRun(source: string): Promise<RunRecord> {
    const run: RunRecord = { id: this.#state.lastRun + 1, source, startedAt: new Date().toISOString(), state: 'running' };
    this.#state.lastRun = run.id;
    this.sourceId(source);
    const ops: BatchOp[] = [
      { type: 'put', sublevel: this.runs, key: pad(run.id), value: run },
      { type: 'put', sublevel: this.#meta, key: 'lastRun', value: run.id },
      { type: 'put', sublevel: this.#meta, key: 'sources', value: this.#state.sources },
    ];
    await this.#db.batch(ops as never);
    this.#runDone.set(run.id, false);
    return run;
  }

  async finishRun(run: RunRecord, opts: { changedCounts?: boolean } = {}): Promise<void> {
    const done: RunRecord = { ...run, state: 'done', finishedAt: new Date().toISOString(), ...(opts.changedCounts ? { changedCounts: true } : {}) };
    await this.runs.put(pad(run.id), done);
    this.#noteRun(done);
  }

  /** The records of strings by key (see stringKey), in one batched read. */
  async lookupStrings(keys: Buffer[]): Promise<(StringRecord | undefined)[]> {
    const values = await this.#db.getMany(keys as never, BINARY as never);
    return (values as unknown as (Buffer | undefined)[]).map((v) => (v ? decodeRecord(v) : undefined));
  }

  /**
   * Writes string records (already encoded) in one atomic write, with the texts of the new strings `firstNewId` on as
   * one chunk (each text as JSON.stringify gives it: the caller has it escaped for request lines too): a dead run's
   * uncommitted strings are found through it. The texts go to the text log first, with a synchronous write, so the
   * pointer to them never lands without them (a killed process keeps what it wrote).
   *
   * The records go to classic-level's native batch as they are (its chained batch's `_put`): they are already the
   * bytes stored, and the public `put`/`batch` copy, validate and re-encode every operation, which measured 10x the
   * cost (4.6 against 0.46 µs per put) and a fifth of the ingest worker's time. What lands is byte for byte what the
   * public API writes (tested). One native batch serves every call, cleared before each: classic-level frees a chained
   * batch's memory only when the garbage collector finalizes it, which let anonymous memory grow 17% from 1M to 4M rows.
   */
  async writeStrings(records: StringWrites, firstNewId: number, newTextsJson: string[]): Promise<void> {
    if (!records.keys.length && !newTextsJson.length) return;
    if (this.#writingStrings) throw new Error('writeStrings: the previous write has not landed');
    this.#writingStrings = true;
    const batch = (this.#stringBatch ??= this.#db.batch() as unknown as NativeChainedBatch);
    try {
      batch._clear();
      const { keys, values } = records;
      for (let i = 0; i < keys.length; i++) batch._put(keys[i]!, values[i]!);
      let end = this.#textEnd;
      if (newTextsJson.length) {
        const line = this.#textLine(newTextsJson);
        for (let at = 0; at < line.length; ) at += writeSync(this.#textLog, line, at, line.length - at, end + at);
        batch.put(pad(firstNewId), { o: end, n: line.length, k: newTextsJson.length } satisfies TextChunk, { sublevel: this.texts, ...JSON_ENTRY });
        batch.put('fields', this.#state.fields, { sublevel: this.#meta, ...JSON_ENTRY });
        end += line.length;
      }
      await batch._write({});
      this.#textEnd = end;
    } finally {
      this.#writingStrings = false;
    }
  }

  /**
   * A text log line, `[json,json,...]` and a newline, encoded into a buffer kept for the next line: no joined string
   * and no new buffer per chunk (those were an eighth of what the ingest worker allocated).
   */
  #textLine(textsJson: string[]): Buffer {
    let room = 2;
    for (const json of textsJson) room += json.length * 3 + 1;
    if (room <= TEXT_BUFFER_MAX && this.#textBuffer.length < room) this.#textBuffer = Buffer.allocUnsafe(Math.min(TEXT_BUFFER_MAX, Math.max(room, this.#textBuffer.length * 2)));
    // A chunk of huge texts gets a buffer of its own, so the one kept stays small.
    const out = room <= TEXT_BUFFER_MAX ? this.#textBuffer : Buffer.allocUnsafe(room);
    let at = 0;
    out[at++] = 0x5b; // [
    for (let i = 0; i < textsJson.length; i++) {
      if (i) out[at++] = 0x2c; // ,
      at += out.write(textsJson[i]!, at, 'utf8');
    }
    out[at++] = 0x5d; // ]
    out[at++] = 0x0a;
    return out.subarray(0, at);
  }

  /** Strings by id, with their texts and records (undefined for an id this work directory never committed). */
  async readStrings(ids: number[]): Promise<(StoredString | undefined)[]> {
    const texts: (string | undefined)[] = [];
    for (const id of ids) texts.push(id < this.#state.committedId ? await this.#textOf(id) : undefined);
    const present = texts.flatMap((t, i) => (t === undefined ? [] : [i]));
    const keys = present.map((i) => stringKey(texts[i]!));
    const records = await this.lookupStrings(keys);
    const out: (StoredString | undefined)[] = new Array(ids.length).fill(undefined);
    present.forEach((i, j) => {
      const record = records[j];
      if (record && record.id === ids[i]) out[i] = { id: ids[i]!, text: texts[i]!, hash: keys[j]!.toString('hex', STRING_HASH_OFFSET), record };
    });
    return out;
  }

  async #textOf(id: number): Promise<string | undefined> {
    const cached = this.#textCache.find(id);
    if (cached !== undefined) return cached;
    for await (const [key, chunk] of this.texts.iterator({ lte: pad(id), reverse: true, limit: 1 })) {
      const first = Number(key);
      const texts = this.#readChunk(first, chunk);
      this.#textCache.add(first, texts, chunk.n);
      return texts[id - first];
    }
    return undefined;
  }

  /**
   * Records a finished request file (or, with `file` null, strings skipped after the last file) and moves the
   * watermark to `committedId`, in one atomic write.
   */
  async commit(committedId: number, file: RequestFile | null, skipped: Array<[number, SkipRecord]>): Promise<void> {
    const ops: BatchOp[] = [];
    for (const [id, rec] of skipped) ops.push({ type: 'put', sublevel: this.skips, key: pad(id), value: rec });
    if (file) {
      ops.push({ type: 'put', sublevel: this.files, key: pad(file.seq), value: file });
      ops.push({ type: 'put', sublevel: this.#meta, key: 'nextSeq', value: file.seq + 1 });
    }
    ops.push({ type: 'put', sublevel: this.#meta, key: 'committedId', value: committedId });
    if (skipped.length) ops.push({ type: 'put', sublevel: this.#meta, key: 'skippedCount', value: this.#state.skippedCount + skipped.length });
    // Durable before declared (a power cut keeps only what reached the disk): the texts the watermark covers first,
    // then the watermark with LevelDB's sync. The request file was flushed and renamed durably before this.
    fsyncSync(this.#textLog);
    syncRecord?.('before', this);
    await this.#db.batch(ops as never, { sync: true } as never);
    this.#state.committedId = committedId;
    this.#state.skippedCount += skipped.length;
    if (file) {
      this.#state.nextSeq = file.seq + 1;
      this.#noteOrigin(file);
    }
    syncRecord?.('after', this);
  }

  async *requestFiles(fromSeq = 0): AsyncGenerator<RequestFile> {
    for await (const [, file] of this.files.iterator({ gte: pad(fromSeq) })) yield file;
  }

  /** Rewrites a request file's record (submit, once it has counted the file's tokens exactly). */
  async putFile(file: RequestFile): Promise<void> {
    await this.files.put(pad(file.seq), file);
  }

  async getJob(seq: number): Promise<JobRecord | undefined> {
    return this.jobs.get(pad(seq));
  }

  /**
   * A job's step is a commit point (an upload, a batch created, results downloaded): written with LevelDB's sync, which
   * also makes every earlier write durable (its log is one file, flushed to that point).
   */
  async putJob(job: JobRecord): Promise<void> {
    await this.jobs.put(pad(job.seq), job, { sync: true } as never);
  }

  /** Every request file with its job (a queued one if it has none yet), in file order, read in pages. */
  async *requestFilesWithJobs(fromSeq = 0): AsyncGenerator<[RequestFile, JobRecord]> {
    let page: RequestFile[] = [];
    const flush = async function* (this: StateStore) {
      const jobs = await this.jobs.getMany(page.map((f) => pad(f.seq)));
      for (const [i, f] of page.entries()) yield [f, jobs[i] ?? { seq: f.seq, state: 'queued', requeues: 0 }] as [RequestFile, JobRecord];
      page = [];
    };
    for await (const [, file] of this.files.iterator({ gte: pad(fromSeq) })) {
      page.push(file);
      if (page.length >= 200) yield* flush.call(this);
    }
    yield* flush.call(this);
  }

  /**
   * Records a request file written for retries: it gets the next sequence number but leaves the id watermark alone,
   * and the failures of the strings it carries are marked as queued in it.
   */
  async addRetryFile(file: RequestFile, ids: number[]): Promise<void> {
    const failures = await this.getFailures(ids);
    const ops: BatchOp[] = [
      { type: 'put', sublevel: this.files, key: pad(file.seq), value: file },
      { type: 'put', sublevel: this.#meta, key: 'nextSeq', value: file.seq + 1 },
    ];
    failures.forEach((f, i) => {
      if (f) ops.push({ type: 'put', sublevel: this.failures, key: pad(ids[i]!), value: { ...f, retrySeq: file.seq } });
    });
    await this.#db.batch(ops as never, { sync: true } as never);
    this.#state.nextSeq = file.seq + 1;
  }

  async *failureRecords(): AsyncGenerator<[number, FailureRecord]> {
    for await (const [key, rec] of this.failures.iterator()) yield [Number(key), rec];
  }

  async getFailures(ids: number[]): Promise<(FailureRecord | undefined)[]> {
    return this.failures.getMany(ids.map(pad));
  }

  /**
   * Records failed strings: one read of their earlier failures so attempts count on, one write. A failure is queued
   * for retry no longer; `seq` is the request file the line failed in (0 for real time and replays). The same failure
   * of the same request file recorded again (a step rerun after a crash) is not another attempt.
   */
  async addFailures(failed: Array<[number, Omit<FailureRecord, 'attempts' | 'retrySeq'>]>): Promise<void> {
    if (!failed.length) return;
    await this.#counted(async () => {
      const previous = await this.getFailures(failed.map(([id]) => id));
      const tally = structuredClone(this.#state.failedBy);
      const ops: BatchOp[] = failed.map(([id, f], i) => {
        const p = previous[i];
        const again = p !== undefined && f.seq !== 0 && p.seq === f.seq && p.code === f.code && p.retrySeq === undefined;
        const record: FailureRecord = { ...f, attempts: (p?.attempts ?? 0) + (again ? 0 : 1) };
        const origin = this.#originOf(id);
        if (p) tallyFailure(tally, origin, p, -1);
        tallyFailure(tally, origin, record, 1);
        return { type: 'put', sublevel: this.failures, key: pad(id), value: record };
      });
      ops.push({ type: 'put', sublevel: this.#meta, key: 'failedBy', value: tally });
      await this.#db.batch(ops as never);
      this.#state.failedBy = tally;
    });
  }

  /** The strings succeeded after all: their failure records go. */
  async clearFailures(ids: number[]): Promise<void> {
    if (!ids.length) return;
    await this.#counted(async () => {
      const previous = await this.getFailures(ids);
      const tally = structuredClone(this.#state.failedBy);
      const ops: BatchOp[] = [];
      previous.forEach((p, i) => {
        if (!p) return;
        tallyFailure(tally, this.#originOf(ids[i]!), p, -1);
        ops.push({ type: 'del', sublevel: this.failures, key: pad(ids[i]!) });
      });
      if (!ops.length) return;
      ops.push({ type: 'put', sublevel: this.#meta, key: 'failedBy', value: tally });
      await this.#db.batch(ops as never);
      this.#state.failedBy = tally;
    });
  }

  /** Real-time tokens spent on a UTC day (for the tokens-per-day cap across runs). */
  async tokensOnDay(day: string): Promise<number> {
    return ((await this.#meta.get(`tpd:${day}`)) as number | undefined) ?? 0;
  }

  async addTokensOnDay(day: string, tokens: number): Promise<void> {
    await this.#meta.put(`tpd:${day}`, (await this.tokensOnDay(day)) + tokens);
  }

  /**
   * The id of a sink target, by its label (`weaviate:<url>/<collection>`, `jsonl:<absolute path>`, `jsonl:stdout`),
   * recorded on first use: indexed and rejected marks and the files' indexedTo belong to one target.
   */
  async targetId(label: string): Promise<number> {
    let id = this.#state.targets.indexOf(label);
    if (id === -1) {
      id = this.#state.targets.push(label) - 1;
      await this.#meta.put('targets', this.#state.targets);
    }
    return id;
  }

  /** The id of a sink target already used, or undefined (nothing is recorded: see targetId). */
  findTarget(label: string): number | undefined {
    const id = this.#state.targets.indexOf(label);
    return id === -1 ? undefined : id;
  }

  #markKey = (target: number, id: number, field: string) => `${target}:${pad(id)}:${this.fieldId(field)}`;

  /**
   * Marks (string, field) objects as acknowledged by sink target `target` with the frequency they were sent with
   * (1 when not given), counting the new ones; an acknowledgement replaces an earlier refusal.
   */
  async markIndexed(target: number, pairs: Array<[number, string, number?]>): Promise<void> {
    const sent = new Map(pairs.map(([id, field, frequency]) => [this.#markKey(target, id, field), frequency ?? 1]));
    await this.#updateMarks(target, pairs, (key, { acked, ackedValue, refused }, tally, ops) => {
      const value = sent.get(key)!;
      if (acked) {
        if (ackedValue !== value) ops.push({ type: 'put', sublevel: this.indexed, key, value });
        return;
      }
      ops.push({ type: 'put', sublevel: this.indexed, key, value });
      tally.a++;
      if (refused) {
        ops.push({ type: 'del', sublevel: this.rejected, key });
        tally.r--;
      }
    });
  }

  /** Marks (string, field) objects as refused for good by sink target `target` (unless it acknowledged them before). */
  async markRejected(target: number, pairs: Array<[number, string]>): Promise<void> {
    await this.#updateMarks(target, pairs, (key, { acked, refused }, tally, ops) => {
      if (acked || refused) return;
      ops.push({ type: 'put', sublevel: this.rejected, key, value: 1 });
      tally.r++;
    });
  }

  /** Forgets target `target`'s acknowledgement of (string id, field) objects (verify --repair found them missing). */
  async unmarkIndexed(target: number, pairs: Array<[number, string]>): Promise<void> {
    await this.#updateMarks(target, pairs, (key, { acked }, tally, ops) => {
      if (!acked) return;
      ops.push({ type: 'del', sublevel: this.indexed, key });
      tally.a--;
    });
  }

  /**
   * Changes marks of target `target`: `change` sees each object's marks and adds the writes and the counts they
   * change; the writes and the target's counters go in one atomic write, one change of marks at a time.
   */
  async #updateMarks(target: number, pairs: Array<[number, string, number?]>, change: (key: string, marks: { acked: boolean; ackedValue: number | undefined; refused: boolean }, tally: ObjectTally, ops: BatchOp[]) => void): Promise<void> {
    if (!pairs.length) return;
    await this.#counted(async () => {
      const keys = [...new Set(pairs.map(([id, field]) => this.#markKey(target, id, field)))];
      const [acked, refused] = await Promise.all([this.indexed.getMany(keys), this.rejected.getMany(keys)]);
      const tally = { ...(this.#state.objectsBy[target] ?? { a: 0, r: 0 }) };
      const ops: BatchOp[] = [];
      keys.forEach((key, i) => change(key, { acked: acked[i] !== undefined, ackedValue: acked[i], refused: refused[i] !== undefined }, tally, ops));
      if (!ops.length) return;
      const objectsBy = { ...this.#state.objectsBy, [target]: tally };
      ops.push({ type: 'put', sublevel: this.#meta, key: 'objectsBy', value: objectsBy });
      await this.#db.batch(ops as never);
      this.#state.objectsBy = objectsBy;
    });
  }

  /** The (string id, field id) of every object sink target `target` acknowledged, in id order, read as it goes. */
  async *marksOf(target: number): AsyncGenerator<[number, number]> {
    for await (const key of this.indexed.keys({ gt: `${target}:`, lt: `${target};` })) {
      const [, id, field] = key.split(':');
      yield [Number(id), Number(field)];
    }
  }

  /** Whether target `target` acknowledged each (string id, field id) object. Batched reads. */
  async marked(target: number, pairs: Array<[number, number]>): Promise<boolean[]> {
    const found = await this.indexed.getMany(pairs.map(([id, field]) => `${target}:${pad(id)}:${field}`));
    return found.map((v) => v !== undefined);
  }

  /**
   * What target `target` did with each object: 'acked', 'refused' for good, or undefined (not taken, or, when a
   * frequency is given, acknowledged with another frequency: to be sent again). Batched reads.
   */
  async takenBy(target: number, pairs: Array<[number, string, number?]>): Promise<Array<'acked' | 'refused' | undefined>> {
    const keys = pairs.map(([id, field]) => this.#markKey(target, id, field));
    const acked = await this.indexed.getMany(keys);
    const refused = await this.rejected.getMany(keys);
    return acked.map((v, i) => (v !== undefined ? (pairs[i]![2] === undefined || pairs[i]![2] === v ? 'acked' : undefined) : refused[i] !== undefined ? 'refused' : undefined));
  }

  async *skipped(): AsyncGenerator<[number, SkipRecord]> {
    for await (const [key, rec] of this.skips.iterator()) yield [Number(key), rec];
  }

  /**
   * Occurrences per field name of one entry: for each source, the counts of that source's latest completed run, so
   * that preparing a re-exported file again replaces its counts instead of adding to them.
   */
  frequencies(record: StringRecord): Record<string, number> {
    const out: Record<string, number> = {};
    for (const counts of record.src) {
      const latest = this.#latestDone.get(this.#state.sources[counts.s] ?? '');
      const c = counts.r === latest ? counts.c : counts.pr === latest ? counts.pc : undefined;
      c?.forEach((n, field) => {
        if (n) out[this.fieldName(field)] = (out[this.fieldName(field)] ?? 0) + n;
      });
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#textLog !== -1) closeSync(this.#textLog);
    this.#textLog = -1;
    await this.#db.close();
  }
}

/**
 * Test hook for the power-cut tests (EMBATCH_TEST_SYNC_RECORD names a file): at each commit, the sizes of the text
 * log and of LevelDB's write-ahead logs just before the watermark write and just after its sync, one JSON line each.
 * What a power cut may leave is any state from an 'after' line up to the next 'before' line.
 */
const syncRecordFile = process.env.EMBATCH_TEST_SYNC_RECORD;
const syncRecord = syncRecordFile
  ? (when: 'before' | 'after', store: StateStore) => {
      const state = path.join(store.dir, 'state');
      const logs = Object.fromEntries(readdirSync(state).filter((n) => n.endsWith('.log')).map((n) => [n, statSync(path.join(state, n)).size]));
      appendFileSync(syncRecordFile, JSON.stringify({ when, committedId: store.committedId, nextSeq: store.nextSeq, texts: statSync(workPaths(store.dir).texts).size, logs }) + '\n');
    }
  : undefined;

/** Adds (`sign` 1) or takes away (-1) one failure of a string prepared in request file `origin`. */
function tallyFailure(tally: Record<string, FailureTally>, origin: number, f: Pick<FailureRecord, 'retryable' | 'attempts'>, sign: 1 | -1): void {
  const t = (tally[origin] ??= { p: 0, r: [] });
  if (!f.retryable) t.p += sign;
  else {
    while (t.r.length <= f.attempts) t.r.push(0);
    t.r[f.attempts]! += sign;
  }
}

/**
 * Adds `n` occurrences in field `field` (an id) from source `source` (an id) during `run` to an entry, folding the
 * counts of the run that touched it last: kept as the fallback if that run completed, dropped if it died.
 */
export function addOccurrences(store: Pick<StateStore, 'isRunDone'>, record: StringRecord, source: number, run: number, field: number, n: number): void {
  let counts: SourceCounts | undefined;
  for (const c of record.src)
    if (c.s === source) {
      counts = c;
      break;
    }
  if (!counts) {
    counts = { s: source, r: run, c: [] };
    record.src.push(counts);
  } else if (counts.r !== run) {
    if (store.isRunDone(counts.r)) {
      counts.pr = counts.r;
      counts.pc = counts.c;
    }
    counts.r = run;
    counts.c = [];
  }
  while (counts.c.length <= field) counts.c.push(0);
  counts.c[field]! += n;
}

/** Bytes of a string's store key: a prefix and the 16 bytes of the xxh3-128 of its UTF-8 text (its hash_value). */
export const STRING_KEY_BYTES = STRING_HASH_OFFSET + 16;

/** Writes a string's store key into the bytes under `view` at `offset`. */
export function writeStringKey(text: string, view: DataView, offset: number): void {
  for (let i = 0; i < STRING_PREFIX.length; i++) view.setUint8(offset + i, STRING_PREFIX[i]!);
  const hash = xxh3.xxh128(text);
  view.setBigUint64(offset + STRING_HASH_OFFSET, hash >> 64n);
  view.setBigUint64(offset + STRING_HASH_OFFSET + 8, BigInt.asUintN(64, hash));
}

/**
 * The 16 hash bytes of the `i`-th key of `keys` (keys laid end to end) as four 32-bit words, into `out` at `at`: a
 * string compared by its words is compared as the store compares it, without touching its text.
 */
export function readKeyWords(keys: Uint8Array, i: number, out: Uint32Array, at: number): void {
  let b = i * STRING_KEY_BYTES + STRING_HASH_OFFSET;
  for (let w = 0; w < 4; w++, b += 4) out[at + w] = (keys[b]! | (keys[b + 1]! << 8) | (keys[b + 2]! << 16) | (keys[b + 3]! << 24)) >>> 0;
}

/** The store key of the string whose hash_value (32 hex digits) is `hash`: found without its text. */
export function stringKeyOfHash(hash: string): Buffer {
  const key = Buffer.allocUnsafeSlow(STRING_KEY_BYTES);
  STRING_PREFIX.copy(key, 0);
  key.write(hash, STRING_HASH_OFFSET, 16, 'hex');
  return key;
}

/** The store key whose hash words (see readKeyWords) are at `at` in `words`. */
export function keyFromWords(words: Uint32Array, at: number): Buffer {
  const key = Buffer.allocUnsafeSlow(STRING_KEY_BYTES);
  STRING_PREFIX.copy(key, 0);
  for (let w = 0, b = STRING_HASH_OFFSET; w < 4; w++, b += 4) {
    const v = words[at + w]!;
    key[b] = v & 255;
    key[b + 1] = (v >>> 8) & 255;
    key[b + 2] = (v >>> 16) & 255;
    key[b + 3] = v >>> 24;
  }
  return key;
}

export function stringKey(text: string): Buffer {
  const key = Buffer.allocUnsafeSlow(STRING_KEY_BYTES);
  writeStringKey(text, new DataView(key.buffer, key.byteOffset, key.length), 0);
  return key;
}

/**
 * A record as a sequence of unsigned numbers, each a little-endian base-128 varint (1 byte below 128, at most 5): id,
 * first field, last run, number of sources, then per source: source, run, previous run (0: none; runs start at 1), the
 * lengths of its counts and previous counts, and those counts. Mostly small numbers: ~13 bytes against 40 as 32-bit
 * words, and the records are what LevelDB's compactions rewrite and its memory maps hold.
 */
export function encodeRecord(r: StringRecord): Buffer {
  let words = 4;
  for (const c of r.src) words += 5 + c.c.length + (c.pc?.length ?? 0);
  const out = new RecordWriter(words);
  out.put(r.id);
  out.put(r.f);
  out.put(r.lr);
  out.put(r.src.length);
  for (const c of r.src) {
    out.put(c.s);
    out.put(c.r);
    out.put(c.pr ?? 0);
    out.put(c.c.length);
    out.put(c.pc?.length ?? 0);
    for (const n of c.c) out.put(n);
    if (c.pc) for (const n of c.pc) out.put(n);
  }
  return out.buf;
}

/**
 * The record of a string first seen in this run, `n` times in field `field` of source `source` and nowhere else: the
 * bytes encodeRecord gives for `{ id, f: field, lr: run, src: [{ s: source, r: run, c: [0, ..., n] }] }`, without
 * building that object (most strings of a first run are such).
 */
export function encodeNewRecord(id: number, field: number, run: number, source: number, n: number): Buffer {
  const out = new RecordWriter(10 + field);
  out.put(id);
  out.put(field);
  out.put(run);
  out.put(1);
  out.put(source);
  out.put(run);
  out.put(0);
  out.put(field + 1);
  out.put(0);
  for (let f = 0; f < field; f++) out.put(0);
  out.put(n);
  return out.buf;
}

/** Varints (see encodeRecord) into a buffer sized for the worst case, cut to what was written. */
class RecordWriter {
  readonly #buf: Buffer;
  #at = 0;
  constructor(numbers: number) {
    this.#buf = Buffer.allocUnsafe(numbers * 5);
  }
  put(n: number): void {
    const b = this.#buf;
    let o = this.#at;
    // n can pass 2^31 (ids, counts), where bit operators turn negative: divide instead.
    while (n >= 128) {
      b[o++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    b[o++] = n;
    this.#at = o;
  }
  get buf(): Buffer {
    return this.#buf.subarray(0, this.#at);
  }
}

export function decodeRecord(buf: Buffer): StringRecord {
  let o = 0;
  const get = () => {
    let n = 0;
    for (let scale = 1; ; scale *= 128) {
      const byte = buf[o++];
      if (byte === undefined) throw new StateError('STATE_RECORD', 'a string record in the state store is cut short; use a new work directory');
      n += (byte & 127) * scale;
      if (byte < 128) return n;
    }
  };
  const record: StringRecord = { id: get(), f: get(), lr: get(), src: [] };
  const sources = get();
  for (let i = 0; i < sources; i++) {
    const s = get();
    const r = get();
    const pr = get();
    const nc = get();
    const npc = get();
    const c = Array.from({ length: nc }, get);
    const counts: SourceCounts = { s, r, c };
    if (pr) {
      counts.pr = pr;
      counts.pc = Array.from({ length: npc }, get);
    }
    record.src.push(counts);
  }
  return record;
}
