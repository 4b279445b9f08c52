/**
 * Worker thread: the store side of `prepare` (dedup against LevelDB, token counts, the token guard, request lines and
 * rolling request files), so it runs on the machine's second core while the main thread reads and parses the CSV.
 * The worker opens the work directory's store and holds it for the whole run (LevelDB allows one opener), and pulls
 * batches of distinct strings from the main thread only as fast as it stores them: memory stays bounded.
 *
 *   main thread: bytes -> decode -> parse CSV -> batch rows -> extract strings --(batches)--> this worker:
 *   dedup (LevelDB) -> count tokens (exact where they decide) -> guard token limit -> format request lines -> write request files
 */
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { countTokens } from '../transforms/count-tokens.js';
import { dedupStrings } from '../transforms/dedup-strings.js';
import type { DistinctBatch } from '../transforms/aggregate-strings.js';
import { formatRequests } from '../transforms/format-requests.js';
import { guardTokens } from '../transforms/guard-tokens.js';
import { cleanRequestDir, writeRequestFiles } from '../transforms/write-request-files.js';
import type { Config } from './config.js';
import { EmbatchError } from './errors.js';
import { maxOpenFilesFor, StateStore } from './store.js';
import { newCounters, type IngestCounters } from './types.js';
import { workPaths } from './workdir.js';

export interface IngestWorkerData {
  config: Config;
  /** The input's absolute path, or the name stdin's counts are kept under. */
  source: string;
}
/** main -> worker: a batch of extracted strings, the end of the input, or "stop: the input failed". */
export type IngestInput = { batch: DistinctBatch } | { end: true } | { abort: true };
/** An error as it crosses threads: enough to rebuild an EmbatchError with its code and exit code. */
export interface CrossedError {
  message: string;
  code?: string;
  exitCode?: 1 | 2;
}
/** worker -> main: the run began; send a batch (with the new strings so far, for progress); finished; failed. */
export type IngestOutput =
  | { ready: { run: number } }
  | { want: true; newStrings: number }
  | { done: { counters: IngestCounters; filesWritten: string[] } }
  | { error: CrossedError };

export function crossError(err: unknown): CrossedError {
  const e = err as EmbatchError;
  return e instanceof EmbatchError ? { message: e.message, code: e.code, exitCode: e.exitCode } : { message: (err as Error)?.message ?? String(err) };
}

export function uncrossError(e: CrossedError): Error {
  return e.code ? new EmbatchError(e.code, e.message, { exitCode: e.exitCode }) : new Error(e.message);
}

async function main(): Promise<void> {
  const port = parentPort!;
  const { config, source } = workerData as IngestWorkerData;
  const post = (m: IngestOutput) => port.postMessage(m);
  const counters = newCounters();
  const paths = workPaths(config.work_dir);
  let store: StateStore | undefined;
  try {
    const reading = maxOpenFilesFor(config.state_max_open_files, false);
    const filling = maxOpenFilesFor(config.state_max_open_files, true);
    store = await StateStore.open(config.work_dir, { maxOpenFiles: reading });
    if (!store.heldStrings && filling !== reading) {
      // Filling an empty store: opened again with fewer table files (opening one that holds no strings costs little).
      await store.close();
      store = await StateStore.open(config.work_dir, { maxOpenFiles: filling });
    }
    const firstSeq = store.nextSeq;
    await cleanRequestDir(paths.requests, store.nextSeq);
    const run = await store.beginRun(source);
    const input = new Readable({ objectMode: true, highWaterMark: 2, read: () => post({ want: true, newStrings: counters.newStrings }) });
    port.on('message', (m: IngestInput) => {
      if ('batch' in m) input.push(m.batch);
      else if ('end' in m) input.push(null);
      else input.destroy(new Error('the input failed'));
    });
    post({ ready: { run: run.id } });
    await pipeline(
      input,
      dedupStrings({ store, run: run.id, source: run.source, embedFields: config.embed_fields, counters }),
      countTokens({ limit: config.max_input_tokens }),
      guardTokens({ limit: config.max_input_tokens, policy: config.over_long_inputs, counters }),
      formatRequests({ model: config.model, encodingFormat: config.encoding_format, dimensions: config.dimensions }),
      writeRequestFiles({ store, dir: paths.requests, maxLines: Math.min(config.max_requests_per_file, config.batch_embedding_size), maxBytes: config.max_file_bytes, model: config.model, run: run.id, counters }),
    );
    // Counts of strings the store held before changed: objects already sent carry old frequencies (index resends them).
    await store.finishRun(run, { changedCounts: counters.known > 0 });
    const filesWritten: string[] = [];
    for await (const f of store.requestFiles(firstSeq)) filesWritten.push(path.join(paths.requests, f.name));
    await store.close();
    store = undefined;
    post({ done: { counters, filesWritten } });
  } catch (err) {
    await store?.close().catch(() => {});
    post({ error: crossError(err) });
  }
}

// prepare.ts imports this module for its types and error helpers; only the worker runs it.
if (!isMainThread) await main();
