/**
 * The Batch API lifecycle: submit request files within the account's queue limits, follow the batches, download
 * output and error files, and turn failed lines into retry files. All state is in the store (store.ts, JobRecord and
 * FailureRecord); every step can be killed and rerun without losing a string or creating a batch twice.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import split2 from 'split2';
import { decodeLine, isRetryable as isRetryableLine } from '../transforms/decode-results.js';
import { customIdOf, parseCustomId, RequestLineFormat, type RequestBatch } from '../transforms/format-requests.js';
import { parseResults, type ParsedLine } from '../transforms/parse-results.js';
import { writeRequestFiles } from '../transforms/write-request-files.js';
import type { Config } from './config.js';
import { EmbatchError } from './errors.js';
import { fsyncFile, renameDurably } from './durable.js';
import { countObjects, readLedger, type ObjectLedger, type StringLedger } from './ledger.js';
import { log } from './log.js';
import { estimateCost } from './models.js';
import { apiError, type Api } from './openai.js';
import { sinkLabel } from './results.js';
import type { FailureRecord, JobRecord, RequestFile, StateStore } from './store.js';
import { countWithin } from './tokens.js';
import { newCounters, type NewString } from './types.js';
import { workPaths } from './workdir.js';

/** What the offline steps need: the store and the config. */
export interface StoreCtx {
  store: StateStore;
  config: Config;
}

export interface Ctx extends StoreCtx {
  api: Api;
}

const ACTIVE_STATUSES = new Set(['validating', 'in_progress', 'finalizing', 'cancelling']);
const QUEUE_LIMIT_CODES = new Set(['token_limit_exceeded', 'request_limit_exceeded']);

// ---------------------------------------------------------------- submit

export interface SubmitSummary {
  submitted: number;
  queued: number;
  waitingReason: string | null;
}

interface Ledger {
  activeBatches: number;
  tokens: number;
  requests: number;
  createdLastHour: number;
}

/** What this work directory has enqueued now (no API reports the headroom, so the tool keeps its own count). */
async function ledger(store: StateStore): Promise<Ledger> {
  const l: Ledger = { activeBatches: 0, tokens: 0, requests: 0, createdLastHour: 0 };
  const hourAgo = Date.now() - 3_600_000;
  for await (const [file, job] of store.requestFilesWithJobs()) {
    if (job.state === 'creating' || (job.state === 'active' && ACTIVE_STATUSES.has(job.status ?? 'validating'))) {
      l.activeBatches++;
      l.tokens += file.tokens;
      l.requests += file.lines;
    }
    if ((job.createdAt ?? 0) > hourAgo) l.createdLastHour++;
  }
  return l;
}

export async function submitQueued(ctx: Ctx): Promise<SubmitSummary> {
  const { store, config } = ctx;
  const l = await ledger(store);
  const summary: SubmitSummary = { submitted: 0, queued: 0, waitingReason: null };
  for await (const [listed, job] of store.requestFilesWithJobs()) {
    if (job.state !== 'queued' && job.state !== 'uploaded' && job.state !== 'creating') continue;
    const file = listed.tokensEstimated ? await countFileTokens(ctx, listed) : listed;
    if (job.state === 'creating') {
      // A create call was sent but its answer never recorded: the batch may exist.
      if (await reconcile(ctx, file, job)) continue;
    }
    const wait =
      job.notBefore && job.notBefore > Date.now()
        ? `file ${file.seq} waits until ${new Date(job.notBefore).toISOString()} after a queue-limit failure`
        : l.activeBatches >= config.max_active_batches
          ? `${l.activeBatches} batches active (max_active_batches ${config.max_active_batches})`
          : l.tokens + file.tokens > config.enqueued_token_budget && l.activeBatches > 0
            ? `${l.tokens.toLocaleString('en-US')} tokens enqueued (enqueued_token_budget ${config.enqueued_token_budget.toLocaleString('en-US')})`
            : l.requests + file.lines > config.enqueued_request_budget && l.activeBatches > 0
              ? `${l.requests.toLocaleString('en-US')} requests enqueued (enqueued_request_budget ${config.enqueued_request_budget.toLocaleString('en-US')})`
              : l.createdLastHour >= config.max_batch_creations_per_hour
                ? `${l.createdLastHour} batches created in the last hour (max_batch_creations_per_hour)`
                : null;
    if (wait) {
      summary.queued++;
      summary.waitingReason ??= wait;
      continue;
    }
    await submitOne(ctx, file, job);
    summary.submitted++;
    l.activeBatches++;
    l.tokens += file.tokens;
    l.requests += file.lines;
    l.createdLastHour++;
  }
  return summary;
}

async function submitOne(ctx: Ctx, file: RequestFile, job: JobRecord): Promise<void> {
  const { store, api } = ctx;
  const filePath = path.join(workPaths(ctx.config.work_dir).requests, file.name);
  if (!job.inputFileId) {
    const sha = await sha256File(filePath);
    if (sha !== file.sha256) throw new EmbatchError('REQUEST_FILE_CHANGED', `${filePath} no longer matches what prepare wrote (sha256 differs); rerun prepare into a fresh work directory`);
    // The SDK never retries a streamed upload: retry here, with a fresh stream each time.
    const uploaded = await withRetries(`upload ${file.name}`, () => api.client.files.create({ file: createReadStream(filePath), purpose: 'batch' }, { maxRetries: 0 }));
    job.inputFileId = uploaded.id;
    job.state = 'uploaded';
    await store.putJob(job);
    crashPoint('after-upload');
  }
  // Record the intent before the call: if the answer is lost, the next run finds the batch by its metadata.
  job.state = 'creating';
  job.intentAt = Date.now();
  await store.putJob(job);
  let batch: OpenAI.Batches.Batch;
  for (let attempt = 1; ; attempt++) {
    try {
      batch = await api.client.batches.create(
        { input_file_id: job.inputFileId, endpoint: '/v1/embeddings', completion_window: '24h', metadata: batchMetadata(store, file) },
        // No SDK retries: a blindly retried create can duplicate the batch. Retries go through reconcile() below.
        { maxRetries: 0 },
      );
      break;
    } catch (err) {
      if (!isRetryable(err) || attempt >= 5) {
        if (!isRetryable(err)) {
          job.state = 'uploaded';
          await store.putJob(job);
        }
        throw apiError(err, `creating the batch for ${file.name}`);
      }
      await backoff(err, attempt, `creating the batch for ${file.name}`);
      // The request may have reached the API before the error: look before creating again.
      if (await reconcile(ctx, file, job)) return;
      job.state = 'creating';
      job.intentAt = Date.now();
      await store.putJob(job);
    }
  }
  crashPoint('after-create');
  adopt(job, batch);
  await store.putJob(job);
  log.info(`submitted ${file.name}: ${batch.id} (${file.lines.toLocaleString('en-US')} requests, ${file.tokens.toLocaleString('en-US')} tokens)`);
}

function batchMetadata(store: StateStore, file: RequestFile): Record<string, string> {
  return { embatch_workdir: store.workdirId, embatch_seq: String(file.seq), embatch_sha256: file.sha256 };
}

function adopt(job: JobRecord, batch: OpenAI.Batches.Batch): void {
  job.batchId = batch.id;
  job.state = 'active';
  job.createdAt = batch.created_at * 1000;
  job.status = batch.status;
  job.counts = batch.request_counts ?? { total: 0, completed: 0, failed: 0 };
  delete job.error;
}

/** Looks for a batch created for this file by an earlier run whose answer was lost; adopts it if found. */
async function reconcile(ctx: Ctx, file: RequestFile, job: JobRecord): Promise<boolean> {
  const since = ((job.intentAt ?? 0) - 10 * 60_000) / 1000;
  const want = batchMetadata(ctx.store, file);
  try {
    for await (const batch of ctx.api.client.batches.list({ limit: 100 })) {
      if (batch.created_at < since) break;
      const m = batch.metadata ?? {};
      if (m.embatch_workdir === want.embatch_workdir && m.embatch_seq === want.embatch_seq && m.embatch_sha256 === want.embatch_sha256 && batch.input_file_id === job.inputFileId) {
        adopt(job, batch);
        await ctx.store.putJob(job);
        log.info(`found ${batch.id} for ${file.name}, created by an interrupted run; not creating it again`);
        return true;
      }
    }
  } catch (err) {
    throw apiError(err, `listing batches to reconcile ${file.name}`);
  }
  job.state = 'uploaded';
  await ctx.store.putJob(job);
  return false;
}

// ---------------------------------------------------------------- follow

export interface RefreshSummary {
  active: number;
  ended: number;
  requeued: number;
  failed: number;
}

/** Reads the current state of every active batch; batches failed on a queue limit go back to the queue. */
export async function refreshActive(ctx: Ctx): Promise<RefreshSummary> {
  const s: RefreshSummary = { active: 0, ended: 0, requeued: 0, failed: 0 };
  for await (const [file, job] of ctx.store.requestFilesWithJobs()) {
    if (job.state !== 'active' || !job.batchId) continue;
    let batch: OpenAI.Batches.Batch;
    try {
      batch = await ctx.api.client.batches.retrieve(job.batchId);
    } catch (err) {
      throw apiError(err, `reading batch ${job.batchId}`);
    }
    job.status = batch.status;
    job.counts = batch.request_counts ?? job.counts;
    job.inProgressAt = batch.in_progress_at ?? null;
    if (batch.status === 'failed') {
      const errors = batch.errors?.data ?? [];
      if (errors.some((e) => QUEUE_LIMIT_CODES.has(e.code ?? ''))) {
        // Not a failure of the strings: the account's queue was full. Back to the queue, same uploaded file.
        job.requeues++;
        job.notBefore = Date.now() + Math.min(ctx.config.queue_retry_delay * 1000 * 2 ** Math.min(job.requeues - 1, 5), 30 * 60_000);
        job.state = 'uploaded';
        job.error = errors.map((e) => `${e.code}: ${e.message}`).join('; ');
        delete job.batchId;
        s.requeued++;
        log.info(`${file.name}: ${batch.id} hit a queue limit (${errors[0]?.code}); back in the queue`);
      } else {
        // Validation failed (a model that does not exist, a bad line): none of its lines ran, so every string in the
        // file failed with the batch's reason, retryable only when that reason is transient.
        const code = errors[0]?.code ?? 'batch_failed';
        job.state = 'downloaded';
        job.error = errors.map((e) => `${e.code}${e.line ? ` (line ${e.line})` : ''}: ${e.message}`).join('; ') || 'failed without errors';
        await recordRequestsFailed(ctx, file, () => true, { code, message: job.error, retryable: isRetryableLine(code, undefined) });
        s.failed++;
        log.warn(`${file.name}: ${batch.id} failed validation: ${job.error}`);
      }
    } else if (ACTIVE_STATUSES.has(batch.status)) s.active++;
    else {
      job.state = 'ended';
      job.outputFileId = batch.output_file_id || null;
      job.errorFileId = batch.error_file_id || null;
      job.usageTokens = batch.usage?.input_tokens;
      s.ended++;
    }
    await ctx.store.putJob(job);
  }
  return s;
}

// ---------------------------------------------------------------- download

export interface DownloadSummary {
  files: number;
  embedded: number;
  failedLines: number;
  redownloads: number;
  /** Error-file lines that name no request of the file (a custom_id not ours, or not readable): counted, not dropped. */
  unmatchedErrorLines: number;
  /** Requests with no line in either file: recorded as failed (retryable), so none is lost between the two files. */
  missingLines: number;
}

/**
 * Downloads the output and error files of ended batches into results/ (streamed, with an idle timeout, under a
 * temporary name until whole and checked against request_counts), then records which strings failed and why.
 */
export async function downloadEnded(ctx: Ctx): Promise<DownloadSummary> {
  const s: DownloadSummary = { files: 0, embedded: 0, failedLines: 0, redownloads: 0, unmatchedErrorLines: 0, missingLines: 0 };
  const dir = workPaths(ctx.config.work_dir).results;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for await (const [file, job] of ctx.store.requestFilesWithJobs()) {
    if (job.state !== 'ended') continue;
    const tag = String(file.seq).padStart(6, '0');
    if (job.outputFileId) {
      const name = `batch_results_${tag}.jsonl`;
      const got = await downloadChecked(ctx, job.outputFileId, path.join(dir, name), job.counts?.completed, s);
      job.outputFile = name;
      job.outputLines = got;
      s.embedded += got;
      s.files++;
      if (file.retry) await clearSucceeded(ctx, path.join(dir, name));
      Object.assign(job, await countObjects(ctx.store, path.join(dir, name)));
    }
    if (job.errorFileId) {
      const name = `batch_errors_${tag}.jsonl`;
      job.errorLines = await downloadChecked(ctx, job.errorFileId, path.join(dir, name), undefined, s);
      job.errorFile = name;
      s.failedLines += job.errorLines;
      s.files++;
      const { matched, unmatched } = await recordFailures(ctx, file, path.join(dir, name));
      s.unmatchedErrorLines += unmatched;
      if (unmatched) log.warn(`${name}: ${unmatched} line(s) name no request of ${file.name} (custom_id not ours or unreadable)`);
      job.errorLines = matched;
    }
    // Every request has a line in one of the two files; any that has none is recorded, never left in between.
    if ((job.outputLines ?? 0) + (job.errorLines ?? 0) < file.lines) s.missingLines += await recordMissing(ctx, file, job);
    job.state = 'downloaded';
    await ctx.store.putJob(job);
    log.info(`${file.name}: downloaded ${job.outputLines ?? 0} results${job.errorLines ? ` and ${job.errorLines} failed lines` : ''}`);
  }
  return s;
}

async function downloadChecked(ctx: Ctx, fileId: string, target: string, expectedLines: number | undefined, s: DownloadSummary): Promise<number> {
  if (!/^[A-Za-z0-9_-]+$/.test(fileId)) throw new EmbatchError('API_BAD_FILE_ID', `the API returned a file id that is not safe to use: ${JSON.stringify(fileId)}`);
  const partial = `${target}.partial`;
  for (let attempt = 1; ; attempt++) {
    try {
      const lines = await downloadOnce(ctx, fileId, partial);
      if (expectedLines !== undefined && lines !== expectedLines) throw new Error(`got ${lines} lines, the batch reports ${expectedLines}`);
      // On disk before the job record says downloaded (see durable.ts).
      fsyncFile(partial);
      await renameDurably(partial, target);
      return lines;
    } catch (err) {
      await rm(partial, { force: true });
      if (attempt >= 4) throw new EmbatchError('DOWNLOAD_FAILED', `downloading ${fileId} to ${target} failed ${attempt} times: ${(err as Error).message}; rerun download`, { cause: err });
      s.redownloads++;
      log.warn(`download of ${fileId} incomplete (${(err as Error).message}); downloading it again`);
      await sleep(500 * 2 ** attempt);
    }
  }
}

/** One streamed download; fails on an idle connection, an early end, or a last line that is not whole. */
async function downloadOnce(ctx: Ctx, fileId: string, partial: string): Promise<number> {
  const idleMs = ctx.config.download_idle_timeout * 1000;
  const abort = new AbortController();
  const response = await ctx.api.client.files.content(fileId, { signal: abort.signal });
  if (!response.body) throw new Error('empty response');
  const expectedBytes = Number(response.headers.get('content-length') ?? NaN);
  let bytes = 0;
  let lines = 0;
  let last = 10;
  let timer = setTimeout(() => abort.abort(new Error(`no data for ${idleMs / 1000} s`)), idleMs);
  const watch = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      clearTimeout(timer);
      timer = setTimeout(() => abort.abort(new Error(`no data for ${idleMs / 1000} s`)), idleMs);
      bytes += chunk.length;
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
      last = chunk[chunk.length - 1] ?? last;
      callback(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(response.body as never), watch, createWriteStream(partial, { mode: 0o600 }));
  } finally {
    clearTimeout(timer);
  }
  if (Number.isFinite(expectedBytes) && bytes !== expectedBytes) throw new Error(`got ${bytes} of ${expectedBytes} bytes`);
  if (bytes > 0 && last !== 10) throw new Error('the last line is not complete');
  return lines;
}

/**
 * Reads an error file line by line (the index path's parser and checks) and records each failed string and why.
 * Returns how many lines named a request of the file and how many did not (those cannot be tied to a string).
 */
async function recordFailures(ctx: Ctx, file: RequestFile, errorFile: string): Promise<{ matched: number; unmatched: number }> {
  const failures = new FailureSlices(ctx.store);
  let unmatched = 0;
  for await (const line of createReadStream(errorFile).pipe(parseResults(errorFile))) {
    const failed = decodeLine(line as ParsedLine, null);
    const parsed = 'vector' in failed || !failed.customId ? undefined : parseCustomId(failed.customId);
    if (!parsed || 'vector' in failed) unmatched++;
    else await failures.add(parsed.id, { customId: failed.customId!, seq: file.seq, code: failed.code, message: failed.reason, retryable: failed.retryable });
  }
  await failures.flush();
  return { matched: failures.count, unmatched };
}

/**
 * The requests of a file that have a line in neither its output nor its error file, recorded as failed (retryable).
 * Holds the ids seen in the two files, at most the request file's lines (50,000).
 */
async function recordMissing(ctx: Ctx, file: RequestFile, job: JobRecord): Promise<number> {
  const dir = workPaths(ctx.config.work_dir).results;
  const seen = new Set<string>();
  for (const name of [job.outputFile, job.errorFile]) {
    if (!name) continue;
    for await (const id of createReadStream(path.join(dir, name)).pipe(split2('\n', customIdOf))) seen.add(id as string);
  }
  const missing = await recordRequestsFailed(ctx, file, (customId) => !seen.has(customId), { code: 'missing_from_results', message: "neither the batch's output file nor its error file has a line for this request", retryable: true });
  if (missing) log.warn(`${file.name}: ${missing} request(s) have no line in the batch's result files; recorded as failed (embatch retry asks again)`);
  return missing;
}

/**
 * Records the requests of a file that `which` picks (by custom_id) as failed for one reason: every string of a file
 * whose batch failed validation, or those a batch's result files left out. Returns how many.
 */
async function recordRequestsFailed(ctx: StoreCtx, file: RequestFile, which: (customId: string) => boolean, failure: { code: string; message: string; retryable: boolean }): Promise<number> {
  const failures = new FailureSlices(ctx.store);
  const requests = path.join(workPaths(ctx.config.work_dir).requests, file.name);
  for await (const customId of createReadStream(requests).pipe(split2('\n', customIdOf))) {
    const parsed = parseCustomId(customId as string);
    if (parsed && which(customId as string)) await failures.add(parsed.id, { customId: customId as string, seq: file.seq, ...failure });
  }
  await failures.flush();
  return failures.count;
}

/** Failure records written in slices of 5,000 as they come (one read of earlier attempts and one write per slice). */
class FailureSlices {
  #slice: Array<[number, Omit<FailureRecord, 'attempts' | 'retrySeq'>]> = [];
  count = 0;
  constructor(readonly store: StateStore) {}
  async add(id: number, failure: Omit<FailureRecord, 'attempts' | 'retrySeq'>): Promise<void> {
    this.#slice.push([id, failure]);
    this.count++;
    if (this.#slice.length >= 5000) await this.flush();
  }
  async flush(): Promise<void> {
    await this.store.addFailures(this.#slice.splice(0));
  }
}

/** After a retry batch (or a retry file embedded in real time): strings in its output file succeeded, so their failure records go. */
export async function clearSucceeded(ctx: StoreCtx, outputFile: string): Promise<void> {
  let ids: number[] = [];
  const flush = async () => ctx.store.clearFailures(ids.splice(0));
  // Only the custom_id is needed: read it from the start of the line instead of parsing a whole embedding.
  for await (const id of createReadStream(outputFile).pipe(split2('\n', customIdOf))) {
    const parsed = parseCustomId(id as string);
    if (parsed) ids.push(parsed.id);
    if (ids.length >= 5000) await flush();
  }
  if (ids.length) await flush();
}

// ---------------------------------------------------------------- retry

export interface RetrySummary {
  requeued: number;
  files: string[];
  permanent: number;
  exhausted: number;
  permanentSamples: Array<{ customId: string; code: string; message: string }>;
}

/** New request files for strings whose lines failed for retryable reasons, up to max_retry_attempts per string. */
export async function createRetryFiles(ctx: StoreCtx): Promise<RetrySummary> {
  const { store, config } = ctx;
  const s: RetrySummary = { requeued: 0, files: [], permanent: 0, exhausted: 0, permanentSamples: [] };
  const format = new RequestLineFormat({ model: config.model, encodingFormat: config.encoding_format, dimensions: config.dimensions });
  const paths = workPaths(config.work_dir);
  const counters = newCounters();

  async function* items(): AsyncGenerator<RequestBatch> {
    let page: Array<[number, FailureRecord]> = [];
    const lookup = async (): Promise<RequestBatch> => {
      const found = await store.readStrings(page.map(([id]) => id));
      const strings: NewString[] = [];
      page.forEach(([id, f], i) => {
        const string = found[i];
        if (!string) return;
        const { crc, field } = parseCustomId(f.customId)!;
        strings.push({ id, crc: parseInt(crc, 16), field, text: string.text, line: undefined, tokens: countWithin(string.text, config.max_input_tokens) });
      });
      page = [];
      return format.format(strings);
    };
    for await (const [id, f] of store.failureRecords()) {
      if (!f.retryable) {
        s.permanent++;
        if (s.permanentSamples.length < 10) s.permanentSamples.push({ customId: f.customId, code: f.code, message: f.message });
        continue;
      }
      if (f.attempts > config.max_retry_attempts) {
        s.exhausted++;
        continue;
      }
      if (f.retrySeq !== undefined) continue;
      page.push([id, f]);
      if (page.length >= 2000) yield await lookup();
    }
    if (page.length) yield await lookup();
  }

  await pipeline(
    Readable.from(items()),
    writeRequestFiles({
      store,
      dir: paths.requests,
      maxLines: Math.min(config.max_requests_per_file, config.batch_embedding_size),
      maxBytes: config.max_file_bytes,
      model: config.model,
      run: 0,
      counters,
      onRetryFile: async (file, ids) => {
        await store.addRetryFile(file, ids);
        s.files.push(path.join(paths.requests, file.name));
      },
    }),
  );
  s.requeued = counters.requestLines;
  return s;
}

// ---------------------------------------------------------------- cancel, status

export interface CancelSummary {
  /** Batches now cancelling. */
  cancelled: string[];
  /** Batches that had ended before the cancel reached them (409): their state is refreshed instead. */
  alreadyEnded: string[];
}

export async function cancelBatches(ctx: Ctx, batchId?: string): Promise<CancelSummary> {
  const s: CancelSummary = { cancelled: [], alreadyEnded: [] };
  for await (const [, job] of ctx.store.requestFilesWithJobs()) {
    if (job.state !== 'active' || !job.batchId || (batchId && job.batchId !== batchId)) continue;
    if (!ACTIVE_STATUSES.has(job.status ?? '') || job.status === 'cancelling') continue;
    const id = job.batchId;
    try {
      // The SDK would retry a 409 four times; it is an answer, not a fault.
      const b = await withRetries(`cancelling ${id}`, () => ctx.api.client.batches.cancel(id, { maxRetries: 0 }));
      job.status = b.status;
      await ctx.store.putJob(job);
      s.cancelled.push(id);
    } catch (err) {
      if (!(err instanceof EmbatchError && err.cause instanceof OpenAI.ConflictError)) throw err;
      s.alreadyEnded.push(id);
      log.info(`${id} had already ended (${err.cause.message}); reading how it ended instead`);
    }
  }
  if (s.alreadyEnded.length) await refreshActive(ctx);
  if (batchId && !s.cancelled.length && !s.alreadyEnded.length) throw new EmbatchError('NO_SUCH_BATCH', `${batchId} is not an active batch of this work directory (see embatch status)`, { exitCode: 2 });
  return s;
}

export interface JobView {
  seq: number;
  file: string;
  batchId: string | null;
  state: string;
  status: string | null;
  total: number;
  completed: number;
  failed: number;
  ageSeconds: number | null;
  etaSeconds: number | null;
  tokens: number;
  costUsd: number | null;
  retry: boolean;
  error: string | null;
}

export interface StatusReport {
  jobs: JobView[];
  totals: { files: number; queued: number; active: number; ended: number; downloaded: number; requests: number; completed: number; failed: number; tokens: number; costUsd: number | null };
  /** Every distinct string in exactly one state, and the objects of the sink target (see src/ledger.ts). */
  strings: StringLedger;
  objects: ObjectLedger;
  /** The failed strings in detail (failed_permanent is failedPermanent + failedExhausted). */
  failures: { failedRetryable: number; failedPermanent: number; failedExhausted: number; queuedForRetry: number };
  next: string;
}

/**
 * The status of every job, as stored (call refreshActive first for live figures), and the ledger for sink target
 * `target` (a sinkLabel; Weaviate's by default). Lists at most `limit` jobs.
 */
export async function statusReport(ctx: StoreCtx, limit = 1000, target = sinkLabel({ kind: 'weaviate' }, ctx.config)): Promise<StatusReport> {
  const now = Date.now();
  const r: StatusReport = {
    jobs: [],
    totals: { files: 0, queued: 0, active: 0, ended: 0, downloaded: 0, requests: 0, completed: 0, failed: 0, tokens: 0, costUsd: 0 },
    ...(await readLedger(ctx.store, target, ctx.config.max_retry_attempts)),
    failures: { failedRetryable: 0, failedPermanent: 0, failedExhausted: 0, queuedForRetry: 0 },
    next: '',
  };
  for await (const [file, job] of ctx.store.requestFilesWithJobs()) {
    const counts = job.counts ?? { total: 0, completed: 0, failed: 0 };
    const cost = estimateCost(file.model, job.usageTokens ?? file.tokens).batchUsd;
    const rate = job.inProgressAt && counts.completed > 0 ? counts.completed / (now / 1000 - job.inProgressAt) : 0;
    const view: JobView = {
      seq: file.seq,
      file: file.name,
      batchId: job.batchId ?? null,
      state: job.state,
      status: job.status ?? null,
      total: counts.total || file.lines,
      completed: counts.completed,
      failed: counts.failed,
      ageSeconds: job.createdAt ? Math.round((now - job.createdAt) / 1000) : null,
      etaSeconds: rate > 0 && job.state === 'active' ? Math.round((counts.total - counts.completed - counts.failed) / rate) : null,
      tokens: file.tokens,
      costUsd: cost,
      retry: file.retry === true,
      error: job.error ?? null,
    };
    if (r.jobs.length < limit) r.jobs.push(view);
    const t = r.totals;
    t.files++;
    if (job.state === 'queued' || job.state === 'uploaded' || job.state === 'creating') t.queued++;
    else if (job.state === 'active' || job.state === 'realtime') t.active++;
    else if (job.state === 'ended') t.ended++;
    else t.downloaded++;
    t.requests += file.lines;
    t.completed += counts.completed;
    // A batch that failed validation ran none of its lines: every string in it failed, with the batch's reason.
    t.failed += job.state === 'downloaded' && job.error && !job.outputFile ? file.lines : counts.failed;
    t.tokens += file.tokens;
    t.costUsd = cost === null || t.costUsd === null ? null : t.costUsd + cost;
  }
  for await (const [, f] of ctx.store.failureRecords()) {
    if (!f.retryable) r.failures.failedPermanent++;
    else if (f.attempts > ctx.config.max_retry_attempts) r.failures.failedExhausted++;
    else if (f.retrySeq !== undefined) r.failures.queuedForRetry++;
    else r.failures.failedRetryable++;
  }
  const t = r.totals;
  r.next =
    t.files === 0
      ? 'nothing prepared yet: run `embatch prepare <csv>`'
      : t.queued > 0 && t.active === 0
        ? 'request files wait to be submitted: run `embatch submit`'
        : t.active > 0
          ? 'batches are running: run `embatch status` later (or `embatch run` to wait for them)'
          : t.ended > 0
            ? 'batches have ended: run `embatch download`'
            : r.failures.failedRetryable > 0
              ? `${r.failures.failedRetryable} strings failed for retryable reasons: run \`embatch retry\`, then \`embatch submit\``
              : r.strings.failed_permanent > 0
                ? `every batch is done, but ${r.strings.failed_permanent} string(s) failed for good (${r.failures.failedPermanent} refused by the API, ${r.failures.failedExhausted} out of retries): \`embatch retry\` lists them with the API's messages`
                : r.strings.embedded > 0
                  ? `every batch is done and downloaded; ${r.strings.embedded} string(s) are not in ${target} yet: run \`embatch index\``
                  : 'every batch is done and downloaded';
  return r;
}

// ---------------------------------------------------------------- helpers

/**
 * Fault injection for the crash tests and campaigns: with EMBATCH_TEST_CRASH_AT naming this point, the process kills
 * itself here with SIGKILL, as a power cut would, leaving state exactly as it is at this moment.
 */
function crashPoint(name: string): void {
  if (process.env.EMBATCH_TEST_CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
}

/** Connection errors, timeouts, 429 (but not insufficient_quota) and 5xx are worth another try. */
function isRetryable(err: unknown): boolean {
  if (err instanceof OpenAI.APIConnectionError) return true;
  if (!(err instanceof OpenAI.APIError)) return false;
  if (err.status === 429) return err.code !== 'insufficient_quota';
  return err.status === 408 || (err.status ?? 0) >= 500;
}

/** Waits as the server asked (retry-after) or with exponential backoff and jitter. */
async function backoff(err: unknown, attempt: number, what: string): Promise<void> {
  const retryAfter = err instanceof OpenAI.APIError ? Number(err.headers?.get?.('retry-after')) : NaN;
  const wait = Number.isFinite(retryAfter) ? retryAfter * 1000 : Math.min(500 * 2 ** (attempt - 1), 8000) * (0.75 + Math.random() / 2);
  log.warn(`${what}: ${(err as Error).message}; trying again in ${(wait / 1000).toFixed(1)} s`);
  await sleep(wait);
}

async function withRetries<T>(what: string, fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || i >= attempts) throw apiError(err, what);
      await backoff(err, i, what);
    }
  }
}

/**
 * Counts a request file's tokens exactly and records them (prepare estimates most of them, see count-tokens.ts): the
 * enqueued-token budget and the cost shown from here on are exact. 50,000 lines take 0.33-0.39 s here.
 */
async function countFileTokens(ctx: StoreCtx, file: RequestFile): Promise<RequestFile> {
  const filePath = path.join(workPaths(ctx.config.work_dir).requests, file.name);
  let tokens = 0;
  let lineNo = 0;
  for await (const line of createReadStream(filePath).pipe(split2())) {
    lineNo++;
    let input: unknown;
    try {
      input = (JSON.parse(line as string) as { body?: { input?: unknown } }).body?.input;
    } catch (err) {
      throw new EmbatchError('REQUEST_FILE_CHANGED', `${filePath}:${lineNo}: not a request line any more (${(err as Error).message}); rerun prepare into a fresh work directory`, { cause: err });
    }
    tokens += typeof input === 'string' ? Math.max(0, countWithin(input, ctx.config.max_input_tokens)) : 0;
  }
  const counted: RequestFile = { ...file, tokens };
  delete counted.tokensEstimated;
  await ctx.store.putFile(counted);
  return counted;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
