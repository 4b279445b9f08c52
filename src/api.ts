/**
 * embatch's public API (`import { ... } from 'embatch'`): each command of the CLI as a function that takes a
 * configuration and returns the summary object its `--json` prints (without the `command` key). The CLI
 * (src/cli.ts, src/commands/) is a thin shell over these: argument parsing, printing and exit codes.
 *
 * Nothing here prints or exits: failures are thrown as EmbatchError (with `code`, `exitCode` and `cause`), progress
 * of a long `runPipeline` comes as events. The stages themselves are `embatch/transforms`.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CancelSummary, Ctx, DownloadSummary, RetrySummary, StatusReport, SubmitSummary } from './batches.js';
import type { Config } from './config.js';
import { UsageError } from './errors.js';
import type { Ledger } from './ledger.js';
import type { PrepareOptions, PrepareSummary } from './prepare.js';
import type { RealtimeSummary } from './realtime.js';
import type { IndexInput, IndexSummary } from './results.js';
import type { StateStore } from './store.js';
import type { VerifySummary } from './verify.js';

export { configSchema, defineConfig, loadConfig, type Config, type ConfigInput, type ConfigSources, type LoadedConfig } from './config.js';
export { EmbatchError, InputError, UsageError } from './errors.js';
export { startSimulator, type RunningSimulator, type SimulatorOptions } from './simulator/server.js';
export { simulatorOptions } from './openai.js';
export type { CancelSummary, DownloadSummary, JobView, RetrySummary, StatusReport, SubmitSummary } from './batches.js';
export type { Ledger, ObjectLedger, StringLedger } from './ledger.js';
export type { PrepareOptions, PrepareSummary, SourceRecord } from './prepare.js';
export type { RealtimeSummary } from './realtime.js';
export type { IndexSummary } from './results.js';
export type { VerifySummary } from './verify.js';

/** For the functions that talk to OpenAI: `simulate` uses the built-in simulator (state in <work_dir>/simulator). */
export interface ApiOptions {
  simulate?: boolean;
}

/** The lifecycle's implementation, loaded when needed (keeps start-up light for commands that do not use it). */
const lifecycle = () => import('./batches.js');

async function withStore<T>(config: Config, fn: (store: StateStore) => Promise<T>): Promise<T> {
  const { StateStore } = await import('./store.js');
  const store = await StateStore.open(config.work_dir, { maxOpenFiles: config.state_max_open_files });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Opens the store and the API, and closes both whatever happens. */
async function withCtx<T>(config: Config, opts: ApiOptions, fn: (ctx: Ctx) => Promise<T>): Promise<T> {
  const { openApi } = await import('./openai.js');
  return withStore(config, async (store) => {
    const api = await openApi(config, { simulate: opts.simulate === true });
    try {
      return await fn({ store, api, config });
    } finally {
      await api.close();
    }
  });
}

/** The ledger's target label of a sink spec (weaviate by default). */
async function targetLabel(config: Config, sink: string | undefined): Promise<string> {
  const { parseSink, sinkLabel } = await import('./results.js');
  return sinkLabel(parseSink(sink), config);
}

/** CSV (a path, "-" for stdin) or records from any iterable to deduplicated request files. Sends nothing. */
export async function prepare(config: Config, options: PrepareOptions): Promise<PrepareSummary> {
  const { prepare: run } = await import('./prepare.js');
  return run(config, options);
}

/** Uploads pending request files and creates batches, within the queue budgets. */
export async function submit(config: Config, opts: ApiOptions = {}): Promise<SubmitSummary> {
  const { submitQueued } = await lifecycle();
  return withCtx(config, opts, (ctx) => submitQueued(ctx));
}

/** Every job, the totals, the ledger of strings and the sink target's objects (`offline`: without asking the API). */
export async function status(config: Config, opts: ApiOptions & { offline?: boolean; sink?: string } = {}): Promise<StatusReport> {
  const { refreshActive, statusReport } = await lifecycle();
  const target = await targetLabel(config, opts.sink);
  if (opts.offline) return withStore(config, (store) => statusReport({ store, config }, 1000, target));
  return withCtx(config, opts, async (ctx) => {
    await refreshActive(ctx);
    return statusReport(ctx, 1000, target);
  });
}

/** Downloads the output and error files of ended batches; returns what came and the ledger after it. */
export async function download(config: Config, opts: ApiOptions = {}): Promise<DownloadSummary & Ledger> {
  const { refreshActive, downloadEnded } = await lifecycle();
  const { readLedger } = await import('./ledger.js');
  const target = await targetLabel(config, undefined);
  return withCtx(config, opts, async (ctx) => {
    await refreshActive(ctx);
    const s = await downloadEnded(ctx);
    return { ...s, ...(await readLedger(ctx.store, target, config.max_retry_attempts)) };
  });
}

/** New request files from the lines that failed for retryable reasons. */
export async function retry(config: Config): Promise<RetrySummary> {
  const { createRetryFiles } = await lifecycle();
  return withStore(config, (store) => createRetryFiles({ store, config }));
}

/** Cancels one active batch, or all of them. */
export async function cancel(config: Config, opts: ApiOptions & { batch?: string } = {}): Promise<CancelSummary> {
  const { cancelBatches } = await lifecycle();
  return withCtx(config, opts, (ctx) => cancelBatches(ctx, opts.batch));
}

/**
 * What `index` did, with the ledger after it: `objects` is the ledger's (the target's objects), the objects this
 * run sent are `objectsSent`; the rest of IndexSummary is there when a file was indexed (files > 0).
 */
export type IndexResult = Ledger & { sink: string; files: number; objectsSent: number } & Partial<Omit<IndexSummary, 'objects' | 'files' | 'sink'>>;

/** Indexes every downloaded object the sink's target has not taken yet (weaviate, jsonl, jsonl:<path>). */
export async function index(config: Config, opts: { sink?: string; retryRejects?: boolean } = {}): Promise<IndexResult> {
  const { indexDownloaded } = await import('./results.js');
  const { readLedger } = await import('./ledger.js');
  const label = await targetLabel(config, opts.sink);
  return withStore(config, async (store) => {
    const s = await indexDownloaded(config, store, opts.sink, { retryRejects: opts.retryRejects === true });
    const ledger = await readLedger(store, label, config.max_retry_attempts);
    if (!s) return { files: 0, sink: label, objectsSent: 0, ...ledger };
    const { objects, ...rest } = s;
    return { ...rest, objectsSent: objects, ...ledger };
  });
}

/**
 * Indexes stored result files again (paths, globs in the last part, "-" for `stdin`), whatever was indexed before:
 * replaying twice leaves the collection unchanged. `stringsFrom` rebuilds the custom_id map from a CSV instead of the
 * work directory.
 */
export async function replay(config: Config, files: string[], opts: { sink?: string; stringsFrom?: string; stdin?: NodeJS.ReadableStream } = {}): Promise<IndexSummary> {
  const { indexFiles, parseSink } = await import('./results.js');
  const inputs = expandInputs(files).map((i) => (i.path === '-' && opts.stdin ? { ...i, stdin: opts.stdin as IndexInput['stdin'] } : i));
  let tempDir: string | undefined;
  try {
    let storeConfig = config;
    if (opts.stringsFrom) {
      // Preparing the same CSV into a fresh store hands out the same ids in the same order as the original run did.
      tempDir = mkdtempSync(path.join(tmpdir(), 'embatch-replay-'));
      storeConfig = { ...config, work_dir: tempDir };
      await prepare(storeConfig, { input: opts.stringsFrom });
    }
    return await withStore(storeConfig, (store) => indexFiles(config, store, inputs, parseSink(opts.sink), { skipIndexed: false }));
  } finally {
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  }
}

/** Compares the Weaviate collection with what the work directory recorded as indexed there (`repair`: fixes it). */
export async function verify(config: Config, opts: { repair?: boolean; sink?: string } = {}): Promise<VerifySummary> {
  const { verify: run } = await import('./verify.js');
  return withStore(config, (store) => run(config, store, { repair: opts.repair === true, sink: opts.sink }));
}

export interface QueryHit {
  distance: number | null;
  field: string;
  frequency: number;
  text: string;
  uuid: string;
}

/** Embeds a text with the configured model and returns its `k` nearest stored strings (of one `field`, if given). */
export async function query(config: Config, text: string, opts: ApiOptions & { k?: number; field?: string } = {}): Promise<{ text: string; hits: QueryHit[] }> {
  const { openApi, apiError } = await import('./openai.js');
  const { toVector } = await import('../transforms/decode-results.js');
  const { connectWeaviate, ensureCollection } = await import('./weaviate.js');
  const api = await openApi(config, { simulate: opts.simulate === true });
  let vector: number[];
  try {
    const res = await api.client.embeddings
      .create({ model: config.model, input: text, encoding_format: 'base64', ...(config.dimensions ? { dimensions: config.dimensions } : {}) })
      .catch((err: unknown) => {
        throw apiError(err, 'embedding the query');
      });
    // The SDK decodes base64 itself when it asked for it; accept either form.
    const v = toVector(res.data[0]?.embedding);
    if (typeof v === 'string') throw new UsageError('QUERY', `the embeddings endpoint returned no usable vector: ${v}`);
    vector = Array.from(v);
  } finally {
    await api.close();
  }
  const client = await connectWeaviate(config);
  try {
    const collection = await ensureCollection(client, config, null);
    const result = await collection.query.nearVector(vector, {
      limit: opts.k ?? 10,
      targetVector: 'default',
      returnMetadata: ['distance'],
      filters: opts.field ? collection.filter.byProperty('field_type').equal(opts.field) : undefined,
    });
    return { text, hits: result.objects.map((o) => ({ distance: o.metadata?.distance ?? null, field: o.properties.field_type, frequency: o.properties.frequency, text: o.properties.original_string, uuid: o.uuid })) };
  } finally {
    await client.close();
  }
}

/** Paths as given; `*` and `?` in the last part are matched against that directory (shells usually do this first). */
export function expandInputs(args: string[]): IndexInput[] {
  const out: IndexInput[] = [];
  for (const a of args) {
    if (a === '-' || a === '') {
      out.push({ path: '-' });
      continue;
    }
    const base = path.basename(a);
    if (!/[*?]/.test(base)) {
      out.push({ path: path.resolve(a) });
      continue;
    }
    const dir = path.dirname(path.resolve(a));
    const re = new RegExp(`^${base.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    const matches = readdirSync(dir).filter((n) => re.test(n)).sort();
    if (!matches.length) throw new UsageError('USAGE', `no file matches ${a}`);
    for (const m of matches) out.push({ path: path.join(dir, m) });
  }
  if (!out.length) throw new UsageError('USAGE', 'name at least one result file (or - for stdin)');
  return out;
}

// ---------------------------------------------------------------- the whole run

export interface RunOptions extends ApiOptions {
  /** A CSV to prepare first (a path, or "-" for `stdin`); without it, go on with what is prepared. */
  input?: string;
  /** Name under which stdin's counts are kept. */
  sourceName?: string;
  stdin?: PrepareOptions['stdin'];
  /** Where results go as batches end: weaviate (default), jsonl, jsonl:<path>, or none. */
  sink?: string;
  /** Progress bars on stderr while preparing and embedding in real time (off by default). */
  showProgress?: boolean;
  /** Stops polling at the next step (everything done so far is kept; run again to go on). */
  signal?: AbortSignal;
  /** Called as the run goes: what each step did. */
  onEvent?: (event: RunEvent) => void;
}

/** What a run reports as it goes. */
export type RunEvent =
  | { type: 'prepared'; summary: PrepareSummary }
  | { type: 'realtime'; summary: RealtimeSummary }
  | { type: 'indexed'; summary: IndexSummary }
  | { type: 'retrying'; strings: number }
  | { type: 'submitted'; batches: number; manualPolling: boolean }
  | { type: 'waiting'; active: number; queued: number; nextCheckSeconds: number }
  | { type: 'max-wait'; seconds: number };

export interface RunResult {
  /** Nothing is left to do (with manual polling: nothing queued or running). */
  done: boolean;
  /** Stopped by the signal. */
  interrupted: boolean;
  status: StatusReport;
  realtime?: RealtimeSummary;
  /** What this run indexed, over all its rounds. */
  indexed: IndexTotals;
}

export interface IndexTotals {
  files: number;
  objects: number;
  acked: number;
  rejected: number;
  alreadyIndexed: number;
}

/**
 * The whole `run`: prepare (when an input is given), then with the Batch API submit, poll, download, index and retry
 * until done (or stop after submitting with batch_manual_polling), or embed in real time (use_batch_embeddings: false)
 * and index.
 */
export async function runPipeline(config: Config, opts: RunOptions = {}): Promise<RunResult> {
  const emit = opts.onEvent ?? (() => {});
  const totals: IndexTotals = { files: 0, objects: 0, acked: 0, rejected: 0, alreadyIndexed: 0 };
  const { refreshActive, downloadEnded, statusReport, createRetryFiles, submitQueued } = await lifecycle();
  const { indexDownloaded } = await import('./results.js');
  const sink = opts.sink === 'none' ? undefined : opts.sink;
  const target = await targetLabel(config, sink);
  const indexRound = async (store: StateStore) => {
    if (opts.sink === 'none') return;
    const s = await indexDownloaded(config, store, opts.sink);
    if (!s) return;
    for (const k of Object.keys(totals) as Array<keyof IndexTotals>) totals[k] += s[k];
    emit({ type: 'indexed', summary: s });
  };
  if (opts.input !== undefined) emit({ type: 'prepared', summary: await prepare(config, { input: opts.input, sourceName: opts.sourceName, stdin: opts.stdin, showProgress: opts.showProgress }) });
  if (!config.use_batch_embeddings) {
    const { runRealtime } = await import('./realtime.js');
    return withCtx(config, opts, async (ctx) => {
      const realtime = await runRealtime(ctx, { showProgress: opts.showProgress === true });
      emit({ type: 'realtime', summary: realtime });
      await indexRound(ctx.store);
      return { done: realtime.failed === 0, interrupted: false, status: await statusReport(ctx, 1000, target), realtime, indexed: totals };
    });
  }
  return withCtx(config, opts, async (ctx) => {
    const started = Date.now();
    for (;;) {
      await refreshActive(ctx);
      await downloadEnded(ctx);
      await indexRound(ctx.store);
      const report = await statusReport(ctx, 0, target);
      if (!config.batch_manual_polling && report.failures.failedRetryable > 0 && report.totals.active === 0 && report.totals.ended === 0) {
        const again = await createRetryFiles(ctx);
        if (again.requeued) emit({ type: 'retrying', strings: again.requeued });
      }
      const submitted = await submitQueued(ctx);
      emit({ type: 'submitted', batches: submitted.submitted, manualPolling: config.batch_manual_polling });
      const now = await statusReport(ctx, 1000, target);
      const done = now.totals.queued === 0 && now.totals.active === 0 && now.totals.ended === 0 && (config.batch_manual_polling || now.failures.failedRetryable === 0);
      if (config.batch_manual_polling || done) return { done, interrupted: false, status: now, indexed: totals };
      if (opts.signal?.aborted) return { done: false, interrupted: true, status: now, indexed: totals };
      if (Date.now() - started > config.batch_max_wait_time * 1000) {
        emit({ type: 'max-wait', seconds: config.batch_max_wait_time });
        return { done: false, interrupted: false, status: now, indexed: totals };
      }
      emit({ type: 'waiting', active: now.totals.active, queued: now.totals.queued, nextCheckSeconds: config.batch_poll_interval });
      try {
        await sleep(config.batch_poll_interval * 1000, undefined, { signal: opts.signal });
      } catch {
        return { done: false, interrupted: true, status: now, indexed: totals };
      }
    }
  });
}
