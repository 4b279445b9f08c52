/**
 * An OpenAI-compatible server for the Files, Batches and Embeddings endpoints, for tests, benchmarks and a first run
 * without an OpenAI account. Clients talk to it with the real `openai` SDK over HTTP (`baseURL`).
 *
 * Faults, all off by default: 429 with retry-after, 500, connection resets, stalled and truncated downloads, and a
 * required API key (401 otherwise). Rates are fractions of requests, drawn from a seeded generator.
 */
import Busboy from 'busboy';
import { createReadStream, createWriteStream, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import { CancelConflict, DEFAULT_ENGINE, embeddingResponse, SimulatorEngine, type EmbeddingBody, type EngineOptions } from './engine.js';
import { validateEmbeddingBody } from './validate.js';

export interface FaultOptions {
  /** Fraction of API requests answered 429 with retry-after. */
  rate429: number;
  retryAfterSeconds: number;
  /** Fraction answered 500. */
  rate500: number;
  /** Fraction whose connection is reset without an answer. */
  rateReset: number;
  /** Fraction of file downloads that stall after half the content, and that end early after half the content. */
  rateStall: number;
  rateTruncate: number;
  /** The first N file downloads end after half their content, whatever the rates (deterministic, for tests). */
  truncateFirstDownloads: number;
  seed: number;
}

export const NO_FAULTS: FaultOptions = { rate429: 0, retryAfterSeconds: 1, rate500: 0, rateReset: 0, rateStall: 0, rateTruncate: 0, truncateFirstDownloads: 0, seed: 42 };

/**
 * The account's real-time limits on /v1/embeddings, enforced as OpenAI does: 429 with x-ratelimit-* headers, which
 * every answer carries. Unset, they are OpenAI's tier-5 embedding limits (10,000 RPM, 10,000,000 TPM): every account
 * has some.
 */
export interface RateLimitOptions {
  rpm: number | null;
  tpm: number | null;
  /** After this many tokens in total, every embeddings request fails with insufficient_quota. */
  quotaTokens: number | null;
  /** A request with an input containing this text fails with 400 (a stand-in for an input the model rejects). */
  rejectInputsContaining: string | null;
  /** A fault: the answer leaves out the embeddings of inputs containing this text (a 200 with fewer data items). */
  omitInputsContaining: string | null;
}

export interface SimulatorOptions {
  dir: string;
  limits?: Partial<RateLimitOptions>;
  /** When set, every request must carry this bearer key. */
  apiKey?: string | undefined;
  engine?: Partial<EngineOptions>;
  faults?: Partial<FaultOptions>;
}

export interface RunningSimulator {
  url: string;
  baseURL: string;
  engine: SimulatorEngine;
  faults: FaultOptions;
  /** Counts of what the simulator answered, for tests and campaigns. */
  stats: Record<string, number>;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

export async function startSimulator(options: SimulatorOptions, port = 0, host = '127.0.0.1'): Promise<RunningSimulator> {
  const engine = new SimulatorEngine(options.dir, { ...DEFAULT_ENGINE, ...options.engine });
  const limits: RateLimitOptions = { rpm: null, tpm: null, quotaTokens: null, rejectInputsContaining: null, omitInputsContaining: null, ...options.limits };
  const rpm = limits.rpm ?? DEFAULT_RPM;
  const tpm = limits.tpm ?? DEFAULT_TPM;
  const requestBucket = new Bucket(rpm);
  const tokenBucket = new Bucket(tpm);
  let tokensUsed = 0;
  const faults: FaultOptions = { ...NO_FAULTS, ...options.faults };
  const stats: Record<string, number> = {};
  const bump = (k: string) => (stats[k] = (stats[k] ?? 0) + 1);
  let rnd = faults.seed >>> 0 || 1;
  const draw = () => {
    rnd = (Math.imul(rnd ^ (rnd >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return rnd / 4294967296;
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) return sendError(res, err);
      bump('internal_error');
      sendError(res, new HttpError(500, `simulator error: ${(err as Error).message}`, 'server_error'));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Every answer of the real API carries one (the SDK exposes it as _request_id).
    res.setHeader('x-request-id', `req_${randomBytes(16).toString('hex')}`);
    const url = new URL(req.url ?? '/', 'http://simulator');
    const route = url.pathname.replace(/^\/v1/, '');
    bump(`${req.method} ${route.replace(/\/(file|batch)[-_][0-9a-z-]+/g, '/{id}')}`);
    if (options.apiKey) {
      const auth = req.headers.authorization ?? '';
      if (auth !== `Bearer ${options.apiKey}`) {
        bump('401');
        const given = auth.replace(/^Bearer /, '');
        throw new HttpError(401, `Incorrect API key provided: ${mask(given)}. You can find your API key at https://platform.openai.com/account/api-keys.`, 'invalid_request_error', 'invalid_api_key');
      }
    }
    // Faults apply to API calls, drawn per request.
    const x = draw();
    if (x < faults.rateReset) {
      bump('fault_reset');
      req.socket.destroy();
      return;
    }
    if (x < faults.rateReset + faults.rate429) {
      bump('fault_429');
      res.setHeader('retry-after', String(faults.retryAfterSeconds));
      throw new HttpError(429, 'Rate limit reached for requests. Please try again in 1s.', 'requests', 'rate_limit_exceeded');
    }
    if (x < faults.rateReset + faults.rate429 + faults.rate500) {
      bump('fault_500');
      throw new HttpError(500, 'The server had an error while processing your request. Sorry about that!', 'server_error');
    }

    let m: RegExpExecArray | null;
    if (req.method === 'POST' && route === '/files') return upload(req, res);
    if (req.method === 'GET' && route === '/files') return listFiles(url.searchParams, res);
    if ((m = /^\/files\/([^/]+)$/.exec(route))) {
      if (req.method === 'GET') return send(res, 200, engine.getFile(m[1]!) ?? notFound('file', m[1]!));
      if (req.method === 'DELETE') return engine.deleteFile(m[1]!) ? send(res, 200, { id: m[1], object: 'file', deleted: true }) : notFound('file', m[1]!);
    }
    if (req.method === 'GET' && (m = /^\/files\/([^/]+)\/content$/.exec(route))) return download(m[1]!, res);
    if (req.method === 'POST' && route === '/batches') return createBatch(await readJsonBody(req), res);
    if (req.method === 'GET' && route === '/batches') {
      const limit = Math.min(100, Math.max(1, Number(url.searchParams.get('limit') ?? 20)));
      const page = await engine.listBatches(limit, url.searchParams.get('after') ?? undefined);
      return send(res, 200, { object: 'list', data: page.data, first_id: page.data[0]?.id ?? null, last_id: page.data.at(-1)?.id ?? null, has_more: page.has_more });
    }
    if (req.method === 'GET' && (m = /^\/batches\/([^/]+)$/.exec(route))) return send(res, 200, (await engine.getBatch(m[1]!)) ?? notFound('batch', m[1]!));
    if (req.method === 'POST' && (m = /^\/batches\/([^/]+)\/cancel$/.exec(route))) {
      const cancelled = (await engine.cancelBatch(m[1]!)) ?? notFound('batch', m[1]!);
      // Recorded: 409, code null.
      if (cancelled instanceof CancelConflict) throw new HttpError(409, `Cannot cancel a batch with status '${cancelled.status}'.`, 'invalid_request_error');
      return send(res, 200, cancelled);
    }
    if (req.method === 'POST' && route === '/embeddings') return embeddings(await readJsonBody(req), res);
    throw new HttpError(404, `Invalid URL (${req.method} ${url.pathname})`);
  }

  /** GET /v1/files: `limit` 1-10,000 (default 10,000), `after`, `order` (desc by default), `purpose`. */
  function listFiles(q: URLSearchParams, res: ServerResponse): void {
    const limit = Number(q.get('limit') ?? 10_000);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(400, `Invalid 'limit': integer below minimum value or above maximum value. Expected a value between 1 and 10000, but got ${q.get('limit')} instead.`, 'invalid_request_error', 'invalid_value', 'limit');
    const order = q.get('order') ?? 'desc';
    if (order !== 'asc' && order !== 'desc') throw new HttpError(400, `Invalid value for 'order': expected 'asc' or 'desc'.`, 'invalid_request_error', 'invalid_value', 'order');
    const page = engine.listFiles({ purpose: q.get('purpose') ?? undefined, limit, after: q.get('after') ?? undefined, order });
    send(res, 200, { object: 'list', data: page.data, first_id: page.data[0]?.id ?? null, last_id: page.data.at(-1)?.id ?? null, has_more: page.has_more });
  }

  async function upload(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { id, tempPath } = engine.beginFile();
    let purpose = '';
    let filename = 'upload.jsonl';
    let gotFile = false;
    const bb = Busboy({ headers: req.headers });
    const files: Promise<void>[] = [];
    bb.on('field', (name, value) => {
      if (name === 'purpose') purpose = value;
    });
    bb.on('file', (name, stream, info) => {
      if (name !== 'file') return stream.resume();
      gotFile = true;
      filename = info.filename || filename;
      // Streamed to disk as it arrives, never held in memory.
      files.push(pipeline(stream, createWriteStream(tempPath, { mode: 0o600 })));
    });
    await new Promise<void>((resolve, reject) => {
      bb.on('close', resolve);
      bb.on('error', reject);
      req.pipe(bb);
    });
    await Promise.all(files);
    if (!gotFile) throw new HttpError(400, "Missing required parameter: 'file'.", 'invalid_request_error', 'missing_required_parameter', 'file');
    if (!['batch', 'assistants', 'fine-tune', 'user_data'].includes(purpose)) {
      rmSync(tempPath, { force: true });
      throw new HttpError(400, `Invalid value for 'purpose': '${purpose}'.`, 'invalid_request_error', 'invalid_value', 'purpose');
    }
    send(res, 200, engine.commitFile(id, tempPath, filename, purpose));
  }

  async function download(id: string, res: ServerResponse): Promise<void> {
    const file = engine.getFile(id);
    if (!file) return notFound('file', id);
    const x = draw();
    const forced = (stats.downloads = (stats.downloads ?? 0) + 1) <= faults.truncateFirstDownloads;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(file.bytes) });
    if (forced || x < faults.rateStall + faults.rateTruncate) {
      // Half the bytes, then either silence (a stall) or an early end of the connection (a truncation).
      const stall = !forced && x < faults.rateStall;
      bump(stall ? 'fault_stall' : 'fault_truncate');
      const half = Math.floor(file.bytes / 2);
      const stream = createReadStream(engine.contentPath(id), { start: 0, end: Math.max(0, half - 1) });
      stream.on('data', (chunk) => res.write(chunk));
      stream.on('end', () => {
        if (stall) setTimeout(() => res.socket?.destroy(), 120_000).unref();
        else res.socket?.destroy();
      });
      return;
    }
    await pipeline(createReadStream(engine.contentPath(id)), res);
  }

  async function createBatch(body: Record<string, unknown>, res: ServerResponse): Promise<void> {
    const inputFileId = body.input_file_id;
    if (typeof inputFileId !== 'string') throw new HttpError(400, "Missing required parameter: 'input_file_id'.", 'invalid_request_error', 'missing_required_parameter', 'input_file_id');
    const file = engine.getFile(inputFileId);
    if (!file) throw new HttpError(400, `No such File object: ${inputFileId}`, 'invalid_request_error', 'invalid_file', 'input_file_id');
    if (file.purpose !== 'batch') throw new HttpError(400, `File ${inputFileId} was not uploaded with purpose 'batch'.`, 'invalid_request_error', 'invalid_file', 'input_file_id');
    if (body.endpoint !== '/v1/embeddings' && body.endpoint !== '/v1/chat/completions' && body.endpoint !== '/v1/responses')
      throw new HttpError(400, `Invalid value for 'endpoint': '${String(body.endpoint)}'.`, 'invalid_request_error', 'invalid_value', 'endpoint');
    if (body.completion_window !== '24h') throw new HttpError(400, "Invalid value for 'completion_window': only '24h' is supported.", 'invalid_request_error', 'invalid_value', 'completion_window');
    const metadata = body.metadata as Record<string, unknown> | undefined | null;
    if (metadata) {
      const entries = Object.entries(metadata);
      if (entries.length > 16 || entries.some(([k, v]) => typeof v !== 'string' || k.length > 64 || v.length > 512))
        throw new HttpError(400, 'Invalid metadata: at most 16 pairs, keys up to 64 characters, string values up to 512 characters.', 'invalid_request_error', 'invalid_value', 'metadata');
    }
    send(res, 200, engine.createBatch({ input_file_id: inputFileId, endpoint: body.endpoint, completion_window: '24h', metadata: (metadata as Record<string, string>) ?? null }));
  }

  function embeddings(body: Record<string, unknown>, res: ServerResponse): void {
    const headers = () => {
      res.setHeader('x-ratelimit-limit-requests', String(rpm));
      res.setHeader('x-ratelimit-remaining-requests', String(Math.max(0, Math.floor(requestBucket.level()))));
      res.setHeader('x-ratelimit-reset-requests', `${Math.ceil(requestBucket.msUntil(rpm))}ms`);
      res.setHeader('x-ratelimit-limit-tokens', String(tpm));
      res.setHeader('x-ratelimit-remaining-tokens', String(Math.max(0, Math.floor(tokenBucket.level()))));
      res.setHeader('x-ratelimit-reset-tokens', `${Math.ceil(tokenBucket.msUntil(tpm))}ms`);
    };
    headers();
    const checked = validateEmbeddingBody(body);
    if (checked.error) throw new HttpError(checked.error.status, checked.error.message, checked.error.type, checked.error.code, checked.error.param);
    const tokens = checked.tokens.reduce((a, b) => a + b, 0);
    const marker = limits.rejectInputsContaining;
    const bad = marker === null ? -1 : checked.inputs.findIndex((t) => t.includes(marker));
    if (bad !== -1) {
      bump('bad_input');
      throw new HttpError(400, `Invalid 'input[${bad}]': rejected by the model.`, 'invalid_request_error', 'invalid_value', 'input');
    }
    if (limits.quotaTokens !== null && tokensUsed + tokens > limits.quotaTokens) {
      bump('insufficient_quota');
      throw new HttpError(429, 'You exceeded your current quota, please check your plan and billing details.', 'insufficient_quota', 'insufficient_quota');
    }
    // Both limits are checked before either is charged, as a request either runs or is refused whole.
    const waitRequests = requestBucket.waitFor(1);
    const waitTokens = tokenBucket.waitFor(tokens);
    if (waitRequests > 0 || waitTokens > 0) {
      bump('rate_limited');
      const wait = Math.max(waitRequests, waitTokens);
      res.setHeader('retry-after-ms', String(Math.ceil(wait)));
      res.setHeader('retry-after', String(Math.max(1, Math.ceil(wait / 1000))));
      throw new HttpError(429, `Rate limit reached for ${String(body.model)} in organization org-simulator on ${waitTokens > 0 ? `tokens per min (TPM): Limit ${tpm}` : `requests per min (RPM): Limit ${rpm}`}. Please try again in ${Math.ceil(wait)}ms.`, 'tokens', 'rate_limit_exceeded');
    }
    requestBucket.take(1);
    tokenBucket.take(tokens);
    tokensUsed += tokens;
    bump('embeddings_ok');
    stats.embedding_tokens = (stats.embedding_tokens ?? 0) + tokens;
    stats.embedding_inputs = (stats.embedding_inputs ?? 0) + checked.inputs.length;
    headers();
    const answer = embeddingResponse(body as unknown as EmbeddingBody, checked);
    const omit = limits.omitInputsContaining;
    if (omit !== null) answer.data = answer.data.filter((d) => !checked.inputs[d.index]!.includes(omit));
    // Each item says which input it embeds (`index`); nothing promises they come in input order, so they do not here.
    shuffleSeeded(answer.data, ++answersGiven);
    send(res, 200, answer);
  }

  let answersGiven = 0;

  function notFound(kind: string, id: string): never {
    throw new HttpError(404, `No such ${kind}: ${id}`, 'invalid_request_error', null, 'id');
  }

  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const address = server.address() as AddressInfo;
  const url = `http://${host}:${address.port}`;
  return {
    url,
    baseURL: `${url}/v1`,
    engine,
    faults,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** OpenAI's tier-5 limits for the embedding models, the simulator's when none are set. */
const DEFAULT_RPM = 10_000;
const DEFAULT_TPM = 10_000_000;

/** A token bucket that refills continuously to `perMinute` over a minute, as OpenAI's limits do. */
class Bucket {
  #level: number;
  #at = performance.now();
  constructor(readonly perMinute: number) {
    this.#level = perMinute;
  }
  level(): number {
    const now = performance.now();
    this.#level = Math.min(this.perMinute, this.#level + ((now - this.#at) * this.perMinute) / 60_000);
    this.#at = now;
    return this.#level;
  }
  /** Milliseconds until `n` fit (0 if they fit now). */
  waitFor(n: number): number {
    const missing = n - this.level();
    return missing <= 0 ? 0 : (missing * 60_000) / this.perMinute;
  }
  msUntil(n: number): number {
    return this.waitFor(Math.min(n, this.perMinute));
  }
  take(n: number): void {
    this.level();
    this.#level -= n;
  }
}

function send(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, err: HttpError): void {
  if (res.headersSent) return void res.socket?.destroy();
  send(res, err.status, { error: { message: err.message, type: err.type, param: err.param, code: err.code } });
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 64 * 1024 * 1024) throw new HttpError(413, 'Request body too large.');
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {}
  throw new HttpError(400, 'We could not parse the JSON body of your request.', 'invalid_request_error');
}

function mask(key: string): string {
  return key.length > 8 ? `${key.slice(0, 3)}*****${key.slice(-4)}` : '*****';
}

/** Fisher-Yates in place, from a small generator seeded by `seed` (reproducible for a given request sequence). */
function shuffleSeeded<T>(items: T[], seed: number): void {
  let state = (Math.imul(seed, 0x9e3779b1) ^ 0x85ebca6b) >>> 0 || 1;
  for (let i = items.length - 1; i > 0; i--) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const j = (state >>> 0) % (i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}
