/**
 * Real-time mode: the prepared request lines go to POST /v1/embeddings directly, many inputs per request, within the
 * account's limits. Every response is written as Batch-API-shaped output lines (results/batch_results_rt_<seq>.jsonl),
 * so the same index path, `replay` and the same Weaviate objects follow, whichever mode embedded a string.
 *
 * Resumable: a request file's output is appended as responses arrive; a rerun keeps the whole lines already there and
 * asks only for the strings that have no vector yet.
 */
import { createReadStream, createWriteStream, existsSync, mkdirSync, openSync, closeSync, ftruncateSync, readSync, statSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import split2 from 'split2';
import { customIdOf, parseCustomId } from '../transforms/format-requests.js';
import { clearSucceeded, type Ctx } from './batches.js';
import { fsyncFile } from './durable.js';
import { EmbatchError } from './errors.js';
import { countObjects } from './ledger.js';
import { log } from './log.js';
import { estimateCost } from './models.js';
import { apiError } from './openai.js';
import { createProgress } from './progress.js';
import { parseDuration, RateLimiter } from './rate-limiter.js';
import type { JobRecord, RequestFile } from './store.js';
import { countWithin } from './tokens.js';
import { workPaths } from './workdir.js';

export interface RealtimeSummary {
  files: number;
  strings: number;
  embedded: number;
  alreadyEmbedded: number;
  failed: number;
  requests: number;
  tokens: number;
  rateLimited: number;
  retries: number;
  splits: number;
  elapsedSeconds: number;
  tokensPerMinute: number;
  costUsd: number | null;
}

interface Input {
  customId: string;
  text: string;
  tokens: number;
}

export async function runRealtime(ctx: Ctx, opts: { showProgress: boolean }): Promise<RealtimeSummary> {
  const { store, config } = ctx;
  const rt = config.realtime;
  const started = performance.now();
  const today = () => new Date().toISOString().slice(0, 10);
  let dayWrites: Promise<void> = Promise.resolve();
  const limiter = new RateLimiter({ rpm: rt.rpm, tpm: rt.tpm, tpd: rt.tpd, burstSeconds: rt.burst_seconds }, rt.tpd ? await store.tokensOnDay(today()) : 0);
  const s: RealtimeSummary = { files: 0, strings: 0, embedded: 0, alreadyEmbedded: 0, failed: 0, requests: 0, tokens: 0, rateLimited: 0, retries: 0, splits: 0, elapsedSeconds: 0, tokensPerMinute: 0, costUsd: 0 };
  const dir = workPaths(config.work_dir).results;
  mkdirSync(dir, { recursive: true, mode: 0o700 });

  // The files this run embeds: prepared and never handed to the Batch API.
  const todo: Array<[RequestFile, JobRecord]> = [];
  let total = 0;
  for await (const [file, job] of store.requestFilesWithJobs()) {
    if (job.state === 'queued' || job.state === 'realtime') {
      todo.push([file, job]);
      total += file.lines;
    }
  }
  const progress = createProgress({ label: 'real-time', total, unit: 'items', enabled: opts.showProgress && total > 0, intervalMs: 10_000 });
  const window: Array<[number, number]> = [];
  const recentTpm = () => {
    const now = performance.now();
    while (window.length && now - window[0]![0] > 60_000) window.shift();
    const span = Math.max(1, Math.min(60_000, now - started));
    return (window.reduce((a, [, t]) => a + t, 0) * 60_000) / span;
  };
  const report = () => {
    const done = s.embedded + s.alreadyEmbedded + s.failed;
    const tpm = recentTpm();
    progress.update(done, `${Math.round(tpm).toLocaleString('en-US')} of ${rt.tpm.toLocaleString('en-US')} TPM | $${(estimateCost(config.model, s.tokens).realtimeUsd ?? 0).toFixed(4)} so far`);
  };

  try {
    for (const [file, job] of todo) {
      await embedFile(file, job);
      s.files++;
    }
  } finally {
    progress.stop();
  }
  s.elapsedSeconds = (performance.now() - started) / 1000;
  s.tokensPerMinute = s.elapsedSeconds > 0 ? (s.tokens * 60) / s.elapsedSeconds : 0;
  s.costUsd = estimateCost(config.model, s.tokens).realtimeUsd;
  return s;

  async function embedFile(file: RequestFile, job: JobRecord): Promise<void> {
    const name = `batch_results_rt_${String(file.seq).padStart(6, '0')}.jsonl`;
    const outPath = path.join(dir, name);
    const done = existsSync(outPath) ? await keepWholeLines(outPath) : new Set<string>();
    await store.putJob({ ...job, state: 'realtime' });
    const out = createWriteStream(outPath, { flags: 'a', mode: 0o600 });
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    let pack: Input[] = [];
    let packTokens = 0;
    let outLines = done.size;

    const dispatch = (inputs: Input[]) => {
      const p = embedPack(inputs, out)
        .then((n) => {
          outLines += n;
        })
        .catch((err: unknown) => {
          failure ??= err;
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    };

    try {
      const requestsPath = path.join(workPaths(config.work_dir).requests, file.name);
      for await (const raw of createReadStream(requestsPath).pipe(split2('\n'))) {
        if (failure) break;
        const line = raw as string;
        if (!line) continue;
        const req = JSON.parse(line) as { custom_id: string; body: { input: string } };
        s.strings++;
        if (done.has(req.custom_id)) {
          s.alreadyEmbedded++;
          continue;
        }
        const tokens = countWithin(req.body.input, config.max_input_tokens);
        if (pack.length && (pack.length >= rt.max_inputs_per_request || packTokens + tokens > rt.max_tokens_per_request)) {
          dispatch(pack);
          pack = [];
          packTokens = 0;
          // Bounded concurrency: reading pauses while the limit of requests is out.
          while (inFlight.size >= rt.concurrency) await Promise.race(inFlight);
        }
        pack.push({ customId: req.custom_id, text: req.body.input, tokens });
        packTokens += tokens;
      }
      if (pack.length && !failure) dispatch(pack);
      while (inFlight.size) await Promise.race(inFlight);
      if (failure) throw failure;
    } finally {
      await new Promise<void>((resolve) => out.end(() => resolve()));
    }
    fsyncFile(outPath); // on disk before the job record says downloaded (see durable.ts)
    // A retry file's strings that are now embedded are failures no longer (as for a retry batch's download).
    if (file.retry) await clearSucceeded(ctx, outPath);
    await store.putJob({ ...job, state: 'downloaded', outputFile: name, outputLines: outLines, counts: { total: file.lines, completed: outLines, failed: file.lines - outLines }, ...(await countObjects(store, outPath)) });
    log.info(`${file.name}: embedded in real time into ${name}`);
  }

  /** One request for the inputs; returns how many lines it wrote. Splits the request to isolate a rejected input. */
  async function embedPack(inputs: Input[], out: WriteStream): Promise<number> {
    const tokens = inputs.reduce((a, i) => a + i.tokens, 0);
    for (let attempt = 0; ; attempt++) {
      await limiter.reserve(tokens);
      try {
        s.requests++;
        const { data: body, response } = await ctx.api.client.embeddings
          .create(
            // encoding_format always explicit: OpenAI-compatible servers differ in their default.
            { model: config.model, input: inputs.map((i) => i.text), encoding_format: config.encoding_format, ...(config.dimensions ? { dimensions: config.dimensions } : {}) },
            { maxRetries: 0 },
          )
          .withResponse();
        limiter.observe(response.headers);
        const requestId = response.headers.get('x-request-id') ?? `rt_${s.requests}`;
        const perInput = body.usage?.prompt_tokens !== undefined && inputs.length === 1 ? body.usage.prompt_tokens : undefined;
        let text = '';
        const answered = new Set<number>();
        for (const item of body.data) {
          const input = inputs[item.index];
          if (!input || answered.has(item.index)) continue;
          answered.add(item.index);
          const usage = perInput ?? input.tokens;
          text += JSON.stringify({
            id: `rt_req_${requestId}_${item.index}`,
            custom_id: input.customId,
            response: { status_code: 200, request_id: requestId, body: { object: 'list', data: [{ object: 'embedding', index: 0, embedding: item.embedding }], model: body.model, usage: { prompt_tokens: usage, total_tokens: usage } } },
            error: null,
          }) + '\n';
        }
        if (!out.write(text)) await once(out, 'drain');
        s.embedded += answered.size;
        // An answer without some of the embeddings asked for: those strings are recorded, never skipped in silence.
        const missing = inputs.filter((_, i) => !answered.has(i));
        if (missing.length) await recordFailed(missing, 'no_embedding', 'the API answered without an embedding for this input', true);
        s.tokens += tokens;
        // Writes in order, one at a time: concurrent read-modify-writes of the day's total would lose some.
        if (rt.tpd) await (dayWrites = dayWrites.then(() => store.addTokensOnDay(today(), tokens)));
        window.push([performance.now(), tokens]);
        report();
        return answered.size;
      } catch (err) {
        if (err instanceof OpenAI.RateLimitError && (err.code === 'insufficient_quota' || err.type === 'insufficient_quota'))
          throw new EmbatchError('API_QUOTA', 'the OpenAI account has no quota left (insufficient_quota): add credit, then rerun; the strings embedded so far are kept', { cause: err });
        // A wrong key or a model the API does not have: no retry can help, and every other request would fail alike.
        if (err instanceof OpenAI.AuthenticationError || err instanceof OpenAI.NotFoundError) throw apiError(err, 'real-time embeddings');
        if (err instanceof OpenAI.RateLimitError) {
          s.rateLimited++;
          const h = err.headers;
          const wait = parseDuration(h?.get('retry-after-ms') ?? null) ?? parseDuration(h?.get('retry-after') ?? null) ?? parseDuration(h?.get('x-ratelimit-reset-tokens') ?? null) ?? 1000;
          limiter.pause(Number(h?.get('retry-after-ms')) || wait);
          attempt--; // waiting out a rate limit is not a failed attempt
          continue;
        }
        if (err instanceof OpenAI.BadRequestError) {
          if (inputs.length > 1) {
            // One bad input fails the whole request: split it to find the input and embed the rest.
            s.splits++;
            const half = Math.ceil(inputs.length / 2);
            return (await embedPack(inputs.slice(0, half), out)) + (await embedPack(inputs.slice(half), out));
          }
          await recordFailed(inputs, err.code ?? 'invalid_request', err.message, false);
          return 0;
        }
        if (attempt >= config.realtime.max_retries) {
          await recordFailed(inputs, err instanceof OpenAI.APIError ? `http_${err.status ?? 'error'}` : 'connection_error', (err as Error).message, true);
          return 0;
        }
        s.retries++;
        await sleep(Math.min(500 * 2 ** attempt, 30_000) * (0.5 + Math.random()));
      }
    }
  }

  async function recordFailed(inputs: Input[], code: string, message: string, retryable: boolean): Promise<void> {
    s.failed += inputs.length;
    await store.addFailures(inputs.map((input) => [parseCustomId(input.customId)!.id, { customId: input.customId, seq: 0, code, message, retryable }]));
    log.warn(`${inputs.length} string(s) failed: ${code}: ${message}`);
  }
}

/**
 * The custom_ids already in a partly written output file (at most one request file's worth, read as a stream), after
 * cutting off a last line a crash left half-written.
 */
async function keepWholeLines(file: string): Promise<Set<string>> {
  const size = statSync(file).size;
  const fd = openSync(file, 'r+');
  try {
    // Find the last newline, reading backwards in 64 KiB steps.
    let end = size;
    const buf = Buffer.alloc(64 * 1024);
    while (end > 0) {
      const start = Math.max(0, end - buf.length);
      const n = readSync(fd, buf, 0, end - start, start);
      const at = buf.subarray(0, n).lastIndexOf(10);
      if (at !== -1) {
        end = start + at + 1;
        break;
      }
      end = start;
    }
    if (end < size) ftruncateSync(fd, end);
  } finally {
    closeSync(fd);
  }
  const ids = new Set<string>();
  for await (const id of createReadStream(file).pipe(split2('\n', customIdOf))) ids.add(id as string);
  return ids;
}
