/**
 * `prepare`: CSV (file or stdin) to deduplicated Batch API request files, in constant memory. Nothing is sent anywhere.
 *
 *   main thread:   bytes -> count -> decode -> parse CSV -> batch rows -> extract strings -> distinct strings with
 *                  counts -> (to the ingest worker)
 *   ingest worker: store keys (xxh3), dedup (LevelDB) -> count tokens (exact where they decide) -> guard token limit -> format request lines
 *                  -> write rolling request files                                           (src/ingest-worker.ts)
 */
import { createReadStream, createWriteStream, statSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Worker } from 'node:worker_threads';
import { batchItems } from '../transforms/batch-items.js';
import { countBytes } from '../transforms/count-bytes.js';
import { decodeText } from '../transforms/decode-text.js';
import { aggregateStrings, type DistinctBatch } from '../transforms/aggregate-strings.js';
import { extractStrings } from '../transforms/extract-strings.js';
import { parseCsv, type RejectedRow } from '../transforms/parse-csv.js';
import type { Config } from './config.js';
import { InputError, UsageError } from './errors.js';
import { uncrossError, type IngestInput, type IngestOutput, type IngestWorkerData } from './ingest-worker.js';
import { estimateCost } from './models.js';
import { createProgress } from './progress.js';
import { addCounters, newCounters, type CsvRecord, type IngestCounters } from './types.js';
import { workPaths } from './workdir.js';

/**
 * Rows per batch after the parser. At ~2 new strings per row, 500 rows still make ~1,000 LevelDB entries per call, so
 * per-call costs stay small (streams-perf §2.5), while the worker holds fewer strings at each young-generation
 * collection: at 200k rows, peak RSS 390-414 MB against 525-553 MB with 2,000 rows, ~5% less CPU, the same wall time.
 */
const ROWS_PER_BATCH = 500;

/**
 * Young generation of the ingest worker's heap, in MB. The worker allocates for every new string (its JSON, record
 * bytes, request line), and its young collections copy what is in flight at the time (a batch being written, another
 * being stored): with V8's default size for a worker, 336 of them took ~1.7 s of the worker at 1M rows; with 128 MB,
 * 91 took 0.42 s (64 or 96 MB: ~167, 0.6 s).
 */
const WORKER_YOUNG_GENERATION_MB = 128;

/** A record from a source other than a CSV: field name to value (null, undefined or a missing field: no value). */
export type SourceRecord = Readonly<Record<string, string | null | undefined>>;

export interface PrepareOptions {
  /** A CSV file's path, or "-" for standard input (`stdin`, process.stdin by default). */
  input?: string | undefined;
  /**
   * Records instead of a CSV (from a database cursor, an NDJSON export, an async generator...): the values of
   * embed_fields are taken by name. Give `sourceName` too: counts are kept under it (default "records").
   */
  records?: AsyncIterable<SourceRecord> | Iterable<SourceRecord>;
  /** Name under which stdin's or the records' counts are kept (default "stdin" / "records"); a file's is its absolute path. */
  sourceName?: string | undefined;
  stdin?: Readable | undefined;
  /** A progress bar on stderr (off by default). */
  showProgress?: boolean | undefined;
}

export interface PrepareSummary {
  input: string;
  rows: number;
  rowsRejected: number;
  stringsSeen: number;
  distinctStrings: number;
  alreadyKnown: number;
  newStrings: number;
  skipped: Record<string, number>;
  requestLines: number;
  filesWritten: string[];
  tokens: number;
  /** How many of `tokens` are estimated from a sample (the rest are counted exactly); submit counts every file exactly. */
  estimatedTokens: number;
  estimatedCostUsd: { batch: number | null; realtime: number | null };
  rejectsFile: string | null;
  workDir: string;
  elapsedSeconds: number;
  peakRssMB: number;
}

export async function prepare(config: Config, options: PrepareOptions): Promise<PrepareSummary> {
  const started = performance.now();
  const paths = workPaths(config.work_dir);
  if ((options.input === undefined) === (options.records === undefined)) throw new UsageError('USAGE', 'prepare takes either an input (a CSV path or "-") or records');
  const records = options.records;
  const fromStdin = options.input === '-';
  const file = records ? `<${options.sourceName ?? 'records'}>` : fromStdin ? '<stdin>' : path.resolve(options.input!);
  let size: number | undefined;
  if (!fromStdin && !records) {
    try {
      size = statSync(file).size;
    } catch (err) {
      throw new InputError('INPUT_NOT_FOUND', file, undefined, 'cannot read the input file (does it exist?)', { cause: err });
    }
  }

  const counters: IngestCounters = newCounters();
  let rejects: WriteStream | undefined;
  const worker = startIngestWorker({ config, source: records ? options.sourceName ?? 'records' : fromStdin ? options.sourceName ?? 'stdin' : file });
  try {
    const { run } = await worker.ready;
    const progress = createProgress({ label: 'prepare', total: size, unit: records ? 'items' : 'bytes', enabled: options.showProgress === true });
    const onReject = (reject: RejectedRow) => {
      counters.rowsRejected++;
      rejects ??= createWriteStream(paths.rejects, { flags: 'a', mode: 0o600 });
      rejects.write(JSON.stringify({ run, ...reject }) + '\n');
    };

    const extract = (header: boolean, columns: string[] | null) =>
      extractStrings({ file, embedFields: config.embed_fields, columns, header, nullValues: config.input.null_values, normalize: config.input.normalize, trim: config.input.trim, counters });
    try {
      if (records)
        // Records arrive as rows of the embed_fields' values in order; a missing value is an empty cell (no string).
        await pipeline(
          rowsOf(records, config.embed_fields, (n) => progress.update(n, `${worker.newStrings().toLocaleString('en-US')} new strings`)),
          batchItems(ROWS_PER_BATCH),
          extract(false, config.embed_fields),
          aggregateStrings(),
          worker.sink,
        );
      else
        await pipeline(
          fromStdin ? options.stdin ?? process.stdin : createReadStream(file, { highWaterMark: 64 * 1024 }),
          countBytes((bytes) => progress.update(bytes, `${worker.newStrings().toLocaleString('en-US')} new strings`)),
          decodeText(file, config.input.encoding),
          parseCsv({ file, delimiter: config.input.delimiter, quote: config.input.quote, escape: config.input.escape, onMalformedRow: config.input.on_malformed_row, onReject }),
          batchItems(ROWS_PER_BATCH),
          extract(config.input.header, config.input.columns),
          aggregateStrings(),
          worker.sink,
        );
    } catch (err) {
      // The input failed: the worker stops too (keeping what it committed), then the input's error is the one shown.
      await worker.abort();
      throw err;
    }
    const done = await worker.done;
    progress.stop();
    addCounters(counters, done.counters);

    const cost = estimateCost(config.model, counters.tokens);
    return {
      input: file,
      rows: counters.rows,
      rowsRejected: counters.rowsRejected,
      stringsSeen: counters.stringsSeen,
      distinctStrings: counters.distinct,
      alreadyKnown: counters.known,
      newStrings: counters.newStrings,
      skipped: counters.skipped,
      requestLines: counters.requestLines,
      filesWritten: done.filesWritten,
      tokens: counters.tokens,
      estimatedTokens: counters.estimatedTokens,
      estimatedCostUsd: { batch: cost.batchUsd, realtime: cost.realtimeUsd },
      rejectsFile: counters.rowsRejected ? paths.rejects : null,
      workDir: config.work_dir,
      elapsedSeconds: (performance.now() - started) / 1000,
      peakRssMB: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    const r = rejects as WriteStream | undefined;
    if (r) await new Promise<void>((resolve) => r.end(resolve));
    await worker.terminate();
  }
}

/** Records to CSV-like rows of the fields' values, numbered from 1 like lines, with a count for progress. */
async function* rowsOf(records: AsyncIterable<SourceRecord> | Iterable<SourceRecord>, fields: string[], progress: (n: number) => void): AsyncGenerator<CsvRecord> {
  let n = 0;
  for await (const record of records) {
    if (record === null || typeof record !== 'object') throw new UsageError('RECORD', `record ${n + 1} is not an object of field values (got ${record === null ? 'null' : typeof record})`);
    const row: CsvRecord = fields.map((f) => {
      const v = record[f];
      return v === null || v === undefined ? '' : String(v);
    });
    row.line = ++n;
    if (n % 10_000 === 0) progress(n);
    yield row;
  }
  progress(n);
}

interface IngestWorker {
  ready: Promise<{ run: number }>;
  /** The last stage of the main thread's pipeline: hands batches over as the worker asks for them. */
  sink: Writable;
  /** Settles when the worker has written and committed everything. */
  done: Promise<{ counters: IngestCounters; filesWritten: string[] }>;
  newStrings(): number;
  abort(): Promise<void>;
  terminate(): Promise<void>;
}

function startIngestWorker(data: IngestWorkerData): IngestWorker {
  const worker = new Worker(new URL('./ingest-worker.js', import.meta.url), { workerData: data, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } });
  const send = (m: IngestInput) => worker.postMessage(m);
  let wanted = 0;
  let newStrings = 0;
  let held: { batch: DistinctBatch; callback: (err?: Error | null) => void } | undefined;
  let failure: Error | undefined;
  let settleReady!: { resolve: (v: { run: number }) => void; reject: (e: Error) => void };
  let settleDone!: { resolve: (v: { counters: IngestCounters; filesWritten: string[] }) => void; reject: (e: Error) => void };
  const ready = new Promise<{ run: number }>((resolve, reject) => (settleReady = { resolve, reject }));
  const done = new Promise<{ counters: IngestCounters; filesWritten: string[] }>((resolve, reject) => (settleDone = { resolve, reject }));
  done.catch(() => {}); // awaited by prepare; this only keeps an early failure from being "unhandled"
  const fail = (err: Error) => {
    failure ??= err;
    settleReady.reject(err);
    settleDone.reject(err);
    const h = held;
    held = undefined;
    h?.callback(err);
  };
  worker.on('message', (m: IngestOutput) => {
    if ('ready' in m) settleReady.resolve(m.ready);
    else if ('want' in m) {
      newStrings = m.newStrings;
      if (!held) return void wanted++;
      const { batch, callback } = held;
      held = undefined;
      send({ batch });
      callback();
    } else if ('done' in m) settleDone.resolve(m.done);
    else fail(uncrossError(m.error));
  });
  worker.on('error', (err) => fail(new Error(`the ingest worker failed: ${err.message}`, { cause: err })));
  worker.on('exit', () => fail(new Error('the ingest worker stopped unexpectedly')));

  const sink = new Writable({
    objectMode: true,
    highWaterMark: 1,
    write(batch: DistinctBatch, _enc, callback) {
      if (failure) return callback(failure);
      if (wanted > 0) {
        wanted--;
        send({ batch });
        callback();
      } else held = { batch, callback };
    },
    final(callback) {
      if (failure) return callback(failure);
      send({ end: true });
      // The main pipeline is done when the worker has stored and written everything.
      done.then(() => callback(), callback);
    },
  });
  return {
    ready,
    sink,
    done,
    newStrings: () => newStrings,
    abort: async () => {
      if (failure) return;
      send({ abort: true });
      await done.catch(() => {});
    },
    terminate: async () => {
      await worker.terminate();
    },
  };
}
