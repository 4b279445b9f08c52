/**
 * The simulator's files and batches, kept in a directory so several processes see the same service. A batch moves by
 * the wall clock (validating -> in_progress -> finalizing -> completed, or failed / expired / cancelling -> cancelled):
 * its state is worked out from its timestamps whenever it is read, and written back when it changes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { countTokens } from 'gpt-tokenizer/encoding/cl100k_base';
import { modelInfo } from '../models.js';
import { hashEmbedding, toBase64 } from './embedding.js';
import { LineSpool } from './line-spool.js';
import { validateBatchFile, validateEmbeddingBody, type BatchError, type CheckedBody } from './validate.js';

export interface EngineOptions {
  /** Seconds a batch spends validating. */
  validatingSeconds: number;
  /** Request lines processed per second while in_progress. */
  linesPerSecond: number;
  finalizingSeconds: number;
  cancellingSeconds: number;
  /** The completion window: a batch not finished this long after creation expires. */
  completionWindowSeconds: number;
  /** Per model: prompt tokens and request lines that may be enqueued at once (validating, in progress, finalizing). */
  enqueuedTokenLimit: number;
  enqueuedRequestLimit: number;
  /** Fractions of request lines that fail inside a batch, with status 500 (retryable) and 400 (permanent). */
  lineServerErrorRate: number;
  lineBadRequestRate: number;
}

export const DEFAULT_ENGINE: EngineOptions = {
  validatingSeconds: 1,
  linesPerSecond: 5000,
  finalizingSeconds: 1,
  cancellingSeconds: 1,
  completionWindowSeconds: 86_400,
  enqueuedTokenLimit: Number.POSITIVE_INFINITY,
  enqueuedRequestLimit: 1_000_000,
  lineServerErrorRate: 0,
  lineBadRequestRate: 0,
};

export interface FileObject {
  id: string;
  object: 'file';
  bytes: number;
  created_at: number;
  filename: string;
  purpose: string;
  status: 'processed';
  expires_at: number | null;
}

export type BatchStatus = 'validating' | 'failed' | 'in_progress' | 'finalizing' | 'completed' | 'expired' | 'cancelling' | 'cancelled';

export interface BatchObject {
  id: string;
  object: 'batch';
  endpoint: string;
  errors: { object: 'list'; data: BatchError[] } | null;
  input_file_id: string;
  completion_window: '24h';
  status: BatchStatus;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  expires_at: number;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
  model: string | null;
  usage: { input_tokens: number; output_tokens: number; total_tokens: number; input_tokens_details: { cached_tokens: number }; output_tokens_details: { reasoning_tokens: number } } | null;
}

/** What the engine keeps beside the public batch object. */
interface BatchRecord {
  batch: BatchObject;
  /** Seconds, fractional: the engine's own clock for progress. */
  t: { created: number; inProgress?: number; cancelling?: number };
  tokens: number;
  seed: number;
  /** 0-based numbers of the lines whose body the endpoint refuses: they fail with a 400 line, the batch goes on. */
  refused?: number[];
}

/** Why a batch cannot be cancelled: its status. */
export class CancelConflict {
  constructor(readonly status: BatchStatus) {}
}

const now = () => Date.now() / 1000;
const newId = (prefix: string) => `${prefix}${randomBytes(12).toString('hex')}`;

export class SimulatorEngine {
  readonly dir: string;
  readonly options: EngineOptions;

  constructor(dir: string, options: Partial<EngineOptions> = {}) {
    this.dir = dir;
    this.options = { ...DEFAULT_ENGINE, ...options };
    for (const sub of ['files', 'batches']) mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
  }

  // --- files ---

  contentPath(id: string): string {
    if (!/^file-[0-9a-z-]+$/.test(id)) throw new Error(`bad file id ${id}`);
    return path.join(this.dir, 'files', `${id}.content`);
  }
  #filePath = (id: string) => path.join(this.dir, 'files', `${id}.json`);

  /** A new file id and the temporary path to stream its content to; call commitFile when it is whole. */
  beginFile(id = newId('file-')): { id: string; tempPath: string } {
    return { id, tempPath: path.join(this.dir, 'files', `.${id}.${process.pid}.partial`) };
  }

  commitFile(id: string, tempPath: string, filename: string, purpose: string): FileObject {
    renameSync(tempPath, this.contentPath(id));
    const created = Math.floor(now());
    const file: FileObject = { id, object: 'file', bytes: statSync(this.contentPath(id)).size, created_at: created, filename, purpose, status: 'processed', expires_at: created + 30 * 86_400 };
    writeJson(this.#filePath(id), file);
    return file;
  }

  getFile(id: string): FileObject | undefined {
    if (!/^file-[0-9a-z-]+$/.test(id)) return undefined;
    return readJson<FileObject>(this.#filePath(id));
  }

  deleteFile(id: string): boolean {
    const file = this.getFile(id);
    if (!file) return false;
    for (const p of [this.#filePath(id), this.contentPath(id)]) if (existsSync(p)) renameSync(p, `${p}.deleted`);
    return true;
  }

  /** A page of files, as GET /v1/files gives it: by created_at (newest first unless `order` is asc), after the id `after`. */
  listFiles(query: { purpose?: string | undefined; limit: number; after?: string | undefined; order: 'asc' | 'desc' }): { data: FileObject[]; has_more: boolean } {
    const sign = query.order === 'asc' ? 1 : -1;
    const all = readdirSync(path.join(this.dir, 'files'))
      .filter((n) => n.endsWith('.json'))
      .map((n) => readJson<FileObject>(path.join(this.dir, 'files', n))!)
      .filter((f) => f && (!query.purpose || f.purpose === query.purpose))
      .sort((a, b) => sign * (a.created_at - b.created_at || (a.id < b.id ? -1 : 1)));
    const start = query.after ? all.findIndex((f) => f.id === query.after) + 1 : 0;
    return { data: all.slice(start, start + query.limit), has_more: start + query.limit < all.length };
  }

  // --- batches ---

  #batchPath = (id: string) => path.join(this.dir, 'batches', `${id}.json`);
  /**
   * The batch's own copy of its input file (a hard link), taken at creation: the service keeps what it was given, so
   * deleting the input file later changes nothing for the batch (before, every later read of it failed with a 500).
   */
  #inputPath = (id: string) => path.join(this.dir, 'batches', `${id}.input`);

  createBatch(params: { input_file_id: string; endpoint: string; completion_window: string; metadata?: Record<string, string> | null }): BatchObject {
    const t = now();
    const id = newId('batch_');
    const batch: BatchObject = {
      id,
      object: 'batch',
      endpoint: params.endpoint,
      errors: null,
      input_file_id: params.input_file_id,
      completion_window: '24h',
      status: 'validating',
      output_file_id: null,
      error_file_id: null,
      created_at: Math.floor(t),
      in_progress_at: null,
      expires_at: Math.floor(t + this.options.completionWindowSeconds),
      finalizing_at: null,
      completed_at: null,
      failed_at: null,
      expired_at: null,
      cancelling_at: null,
      cancelled_at: null,
      request_counts: { total: 0, completed: 0, failed: 0 },
      metadata: params.metadata ?? null,
      model: null,
      usage: null,
    };
    try {
      linkSync(this.contentPath(params.input_file_id), this.#inputPath(id));
    } catch {
      copyFileSync(this.contentPath(params.input_file_id), this.#inputPath(id));
    }
    this.#save({ batch, t: { created: t }, tokens: 0, seed: parseInt(createHash('sha1').update(id).digest('hex').slice(0, 8), 16) });
    return batch;
  }

  async getBatch(id: string): Promise<BatchObject | undefined> {
    const record = readJson<BatchRecord>(this.#batchPath(id));
    if (!record) return undefined;
    await this.#advance(record);
    return record.batch;
  }

  /** Newest first, as OpenAI lists them; `after` is the id of the last batch of the previous page. */
  async listBatches(limit: number, after?: string): Promise<{ data: BatchObject[]; has_more: boolean }> {
    const all = readdirSync(path.join(this.dir, 'batches'))
      .filter((n) => n.endsWith('.json'))
      .map((n) => readJson<BatchRecord>(path.join(this.dir, 'batches', n))!)
      .filter(Boolean)
      .sort((a, b) => b.t.created - a.t.created || (a.batch.id < b.batch.id ? 1 : -1));
    let start = 0;
    if (after) start = all.findIndex((r) => r.batch.id === after) + 1;
    const page = all.slice(start, start + limit);
    for (const r of page) await this.#advance(r);
    return { data: page.map((r) => r.batch), has_more: start + limit < all.length };
  }

  /**
   * Cancels a batch that is still running. One that has ended answers 409 at OpenAI ("Cannot cancel a batch with status
   * 'completed'.", recorded); one already cancelling is taken to answer the same (not verified).
   */
  async cancelBatch(id: string): Promise<BatchObject | CancelConflict | undefined> {
    const record = readJson<BatchRecord>(this.#batchPath(id));
    if (!record) return undefined;
    await this.#advance(record);
    const b = record.batch;
    if (b.status !== 'validating' && b.status !== 'in_progress' && b.status !== 'finalizing') return new CancelConflict(b.status);
    const t = now();
    b.status = 'cancelling';
    b.cancelling_at = Math.floor(t);
    record.t.cancelling = t;
    this.#save(record);
    return b;
  }

  #save(record: BatchRecord): void {
    writeJson(this.#batchPath(record.batch.id), record);
  }

  /** Tokens and lines of this model's batches that count against the queue limits now. */
  #enqueued(model: string, except: string): { tokens: number; requests: number } {
    let tokens = 0;
    let requests = 0;
    for (const n of readdirSync(path.join(this.dir, 'batches'))) {
      if (!n.endsWith('.json')) continue;
      const r = readJson<BatchRecord>(path.join(this.dir, 'batches', n));
      if (!r || r.batch.id === except || r.batch.model !== model) continue;
      if (r.batch.status === 'in_progress' || r.batch.status === 'finalizing' || r.batch.status === 'cancelling') {
        tokens += r.tokens;
        requests += r.batch.request_counts.total;
      }
    }
    return { tokens, requests };
  }

  /** Brings a batch up to the wall clock, running each transition that is due. */
  async #advance(record: BatchRecord): Promise<void> {
    const o = this.options;
    const b = record.batch;
    const t = now();
    let changed = false;

    if (b.status === 'validating' && t >= record.t.created + o.validatingSeconds) {
      changed = true;
      const inputPath = this.#batchInput(b);
      const v = await validateBatchFile(inputPath, statSync(inputPath).size, b.endpoint);
      const at = record.t.created + o.validatingSeconds;
      b.model = v.model ?? null;
      if (!v.errors.length && v.model) {
        const q = this.#enqueued(v.model, b.id);
        if (q.tokens + v.tokens > o.enqueuedTokenLimit)
          v.errors.push({ code: 'token_limit_exceeded', message: `Enqueued token limit reached for ${v.model} in organization org-simulator. Limit: ${o.enqueuedTokenLimit} enqueued tokens. Please try submitting your batch again later.`, param: null, line: null });
        else if (q.requests + v.lines > o.enqueuedRequestLimit)
          v.errors.push({ code: 'request_limit_exceeded', message: `Enqueued request limit reached for ${v.model} in organization org-simulator. Limit: ${o.enqueuedRequestLimit} enqueued requests. Please try again once some in_progress batches have been completed.`, param: null, line: null });
      }
      if (v.errors.length) {
        b.status = 'failed';
        b.failed_at = Math.floor(at);
        b.errors = { object: 'list', data: v.errors };
      } else {
        b.status = 'in_progress';
        b.in_progress_at = Math.floor(at);
        record.t.inProgress = at;
        b.request_counts.total = v.lines;
        record.tokens = v.tokens;
        if (v.refused.length) record.refused = v.refused;
      }
    }

    if (b.status === 'in_progress' && record.t.inProgress !== undefined) {
      const total = b.request_counts.total;
      const doneAt = record.t.inProgress + total / o.linesPerSecond;
      const expiresAt = record.t.created + o.completionWindowSeconds;
      const until = Math.min(t, doneAt, expiresAt);
      const done = Math.min(total, Math.floor((until - record.t.inProgress) * o.linesPerSecond));
      const counts = this.#countFates(record, done);
      if (counts.completed !== b.request_counts.completed || counts.failed !== b.request_counts.failed) {
        b.request_counts = { total, ...counts };
        changed = true;
      }
      if (t >= expiresAt && doneAt > expiresAt) {
        await this.#finish(record, 'expired', done, expiresAt);
        changed = true;
      } else if (t >= doneAt) {
        b.status = 'finalizing';
        b.finalizing_at = Math.floor(doneAt);
        changed = true;
      }
    }

    if (b.status === 'finalizing' && b.finalizing_at !== null && t >= record.t.inProgress! + b.request_counts.total / o.linesPerSecond + o.finalizingSeconds) {
      await this.#finish(record, 'completed', b.request_counts.total, t);
      changed = true;
    }

    if (b.status === 'cancelling' && record.t.cancelling !== undefined && t >= record.t.cancelling + o.cancellingSeconds) {
      const done = record.t.inProgress === undefined ? 0 : Math.min(b.request_counts.total, Math.floor((record.t.cancelling - record.t.inProgress) * o.linesPerSecond));
      await this.#finish(record, 'cancelled', done, t);
      changed = true;
    }
    if (changed) this.#save(record);
  }

  /** How line i of a batch fares: deterministic per batch, so every process agrees. */
  #fate(record: BatchRecord, i: number): 'ok' | 500 | 400 {
    const x = (((Math.imul(record.seed ^ (i + 1), 0x9e3779b1) >>> 0) ^ (i * 0x85ebca6b)) >>> 0) / 4294967296;
    if (x < this.options.lineServerErrorRate) return 500;
    if (x < this.options.lineServerErrorRate + this.options.lineBadRequestRate) return 400;
    return 'ok';
  }

  #countFates(record: BatchRecord, done: number): { completed: number; failed: number } {
    let failed = 0;
    const refused = new Set(record.refused);
    if (this.options.lineServerErrorRate + this.options.lineBadRequestRate > 0 || refused.size) for (let i = 0; i < done; i++) if (refused.has(i) || this.#fate(record, i) !== 'ok') failed++;
    return { completed: done - failed, failed };
  }

  /** The input a batch reads: its own copy, or (a batch of an older simulator directory) the uploaded file. */
  #batchInput(b: BatchObject): string {
    const own = this.#inputPath(b.id);
    return existsSync(own) ? own : this.contentPath(b.input_file_id);
  }

  /**
   * Writes the output file (successful lines) and the error file (failed lines, lines whose body the endpoint refuses,
   * and batch_expired / batch_cancelled for lines never run), then ends the batch. OpenAI keeps no order in these files,
   * so the lines come out in a full shuffle, seeded by the batch (see LineSpool): a reader that only works on lines
   * in input order fails here as it would against the real API.
   */
  async #finish(record: BatchRecord, status: 'completed' | 'expired' | 'cancelled', done: number, at: number): Promise<void> {
    const b = record.batch;
    // Ids fixed by the batch: two processes finishing the same batch write the same files.
    const out = this.beginFile(`file-out-${b.id.slice('batch_'.length)}`);
    const err = this.beginFile(`file-err-${b.id.slice('batch_'.length)}`);
    const scratch = `${out.tempPath}.unshuffled`;
    const lines = new LineSpool(scratch);
    let usage = 0;
    if (b.request_counts.total > 0) {
      let i = -1;
      const input = createInterface({ input: createReadStream(this.#batchInput(b)), crlfDelay: Infinity });
      for await (const text of input) {
        if (!text.trim()) continue;
        i++;
        const req = JSON.parse(text) as { custom_id: string; body: EmbeddingBody };
        const reqId = `req_${createHash('sha1').update(`${b.id}:${i}`).digest('hex').slice(0, 24)}`;
        const base = { id: `batch_req_${createHash('sha1').update(`${b.id}/${i}`).digest('hex').slice(0, 24)}`, custom_id: req.custom_id };
        const checked = i < done ? validateEmbeddingBody(req.body) : undefined;
        if (!checked) {
          const code = status === 'expired' ? 'batch_expired' : 'batch_cancelled';
          const message = status === 'expired' ? 'This request could not be executed before the completion window expired.' : 'This request was not executed because the batch was cancelled.';
          await lines.add(false, JSON.stringify({ ...base, response: null, error: { code, message } }));
        } else if (checked.error) {
          // As recorded for real batches: the endpoint's error body under response, status 400, error null. (The same
          // check found these lines at validation: record.refused, for the live counts.)
          const e = checked.error;
          await lines.add(false, JSON.stringify({ ...base, response: { status_code: e.status, request_id: reqId, body: { error: { message: e.message, type: e.type, param: e.param, code: e.code } } }, error: null }));
        } else {
          const fate = this.#fate(record, i);
          if (fate !== 'ok') {
            const body = fate === 500 ? { error: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null } } : { error: { message: "Invalid 'input': the request was rejected by the simulator's bad-request fault.", type: 'invalid_request_error', param: 'input', code: 'invalid_value' } };
            await lines.add(false, JSON.stringify({ ...base, response: { status_code: fate, request_id: reqId, body }, error: null }));
          } else {
            const line = embeddingResponse(req.body, checked);
            usage += line.usage.total_tokens;
            await lines.add(true, JSON.stringify({ ...base, response: { status_code: 200, request_id: reqId, body: line }, error: null }));
          }
        }
      }
    }
    await lines.close();
    const { ok: outLines, failed: errLines } = await lines.shuffleInto(out.tempPath, err.tempPath, record.seed);
    rmSync(scratch, { force: true });
    b.output_file_id = outLines ? this.commitFile(out.id, out.tempPath, 'batch_output.jsonl', 'batch_output').id : null;
    b.error_file_id = errLines ? this.commitFile(err.id, err.tempPath, 'batch_error.jsonl', 'batch_output').id : null;
    for (const p of [out.tempPath, err.tempPath]) rmSync(p, { force: true });
    b.status = status;
    if (status === 'completed') b.completed_at = Math.floor(at);
    if (status === 'expired') b.expired_at = Math.floor(at);
    if (status === 'cancelled') b.cancelled_at = Math.floor(at);
    b.request_counts = { total: b.request_counts.total, completed: outLines, failed: errLines };
    b.usage = { input_tokens: usage, output_tokens: 0, total_tokens: usage, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } };
  }
}

const asText = { disallowedSpecial: new Set<string>() };

export interface EmbeddingBody {
  model: string;
  input: string | string[] | number[] | number[][];
  encoding_format?: string;
  dimensions?: number;
}

/**
 * The body of a successful /v1/embeddings response for a request body (already validated: `checked` has its texts
 * and token counts). The model answers under its response name (ada-002 as "text-embedding-ada-002-v2", recorded).
 */
export function embeddingResponse(body: EmbeddingBody, checked: CheckedBody = validateEmbeddingBody(body)) {
  const info = modelInfo(body.model);
  const dims = body.dimensions ?? info?.nativeDimensions ?? 1536;
  let tokens = 0;
  const data = checked.inputs.map((text, index) => {
    tokens += checked.tokens[index] ?? countTokens(text, asText);
    const v = hashEmbedding(text, dims);
    return { object: 'embedding' as const, index, embedding: body.encoding_format === 'base64' ? toBase64(v) : Array.from(v) };
  });
  return { object: 'list' as const, data, model: info?.responseModel ?? body.model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function writeJson(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 });
  renameSync(tmp, file);
}
