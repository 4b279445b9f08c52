import assert from 'node:assert/strict';
import { createWriteStream, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { countTokens } from 'gpt-tokenizer/encoding/cl100k_base';
import OpenAI from 'openai';
import { writeCatalog } from '../bench/gen-catalog.js';
import { startSimulator, type SimulatorOptions } from '../src/simulator/server.js';
import { fixture, requestLines, runCli, tempDir } from './helpers.js';

const KEY = 'sk-embatch-test-9f8e7d6c5b4a';

/** A simulator on a free port for one test, and a CLI runner pointed at it through the environment. */
async function setup(t: Parameters<typeof tempDir>[0], options: Omit<SimulatorOptions, 'dir'> = {}) {
  const work = tempDir(t);
  const sim = await startSimulator({ dir: path.join(tempDir(t), 'sim'), apiKey: KEY, ...options, engine: { validatingSeconds: 0.2, finalizingSeconds: 0.2, linesPerSecond: 2000, ...options.engine } });
  t.after(() => sim.close());
  const env = { OPENAI_BASE_URL: sim.baseURL, OPENAI_API_KEY: KEY };
  const cli = async (args: string[], extraEnv: Record<string, string> = {}) => runCli([...args, '--work-dir', work], { env: { ...env, ...extraEnv } });
  const json = async (args: string[], extraEnv: Record<string, string> = {}) => {
    const r = await cli([...args, '--json'], extraEnv);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  const client = new OpenAI({ apiKey: KEY, baseURL: sim.baseURL });
  return { work, sim, cli, json, client };
}

async function allBatches(client: OpenAI) {
  const out = [];
  for await (const b of client.batches.list({ limit: 100 })) out.push(b);
  return out;
}

/** custom_ids of every successful line in the results folder. */
function embeddedIds(work: string): string[] {
  const dir = path.join(work, 'results');
  return readdirSync(dir)
    .filter((n) => n.startsWith('batch_results_'))
    .flatMap((n) => readFileSync(path.join(dir, n), 'utf8').split('\n').filter(Boolean))
    .map((l) => JSON.parse(l))
    .filter((l) => l.response?.status_code === 200)
    .map((l) => l.custom_id as string);
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last: ${JSON.stringify(v).slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

test('prepare, submit, status, download: every string comes back, with live counts and a cost report', async (t) => {
  // One line a second: the batches stay in progress until the test has seen them there, then are sped up.
  const { work, json, client, sim } = await setup(t, { engine: { linesPerSecond: 1 } });
  const prepared = await json(['prepare', fixture('catalog.csv'), '--set', 'max_requests_per_file=50']);
  const exactTokens = requestLines(work).reduce((n, l) => n + countTokens(l.body.input, { disallowedSpecial: new Set() }), 0);
  assert.equal(prepared.estimatedTokens, 0, 'a small input is counted exactly (see the next test for estimates)');
  const sub = await json(['submit']);
  assert.equal(sub.submitted, 2);
  const batches = await allBatches(client);
  assert.equal(batches.length, 2);
  assert.ok(batches.every((b) => b.metadata?.embatch_seq && b.metadata?.embatch_sha256 && b.endpoint === '/v1/embeddings' && b.completion_window === '24h'));

  const live = await until(
    () => json(['status']),
    (r) => r.jobs.some((j: { status: string; completed: number }) => j.status === 'in_progress' && j.completed > 0),
  );
  assert.ok(live.totals.completed < 93, 'live counts while in progress');
  sim.engine.options.linesPerSecond = 100_000;
  const report = await until(
    () => json(['status']),
    (r) => r.totals.ended === 2,
  );
  assert.equal(report.totals.completed, 93);
  assert.equal(report.totals.tokens, exactTokens, 'submit counted each file exactly before enqueueing it');
  // text-embedding-3-small at OpenAI's batch price, $0.01 per million tokens, on the tokens counted here.
  assert.ok(Math.abs(report.totals.costUsd - (exactTokens * 0.01) / 1e6) < 1e-12, 'cost at batch prices');
  assert.match(report.next, /embatch download/);

  const dl = await json(['download']);
  assert.equal(dl.embedded, 93);
  const ids = embeddedIds(work);
  assert.deepEqual(ids.sort(), requestLines(work).map((l) => l.custom_id).sort());
  const after = await json(['status']);
  assert.equal(after.totals.downloaded, 2);
  assert.match(after.next, /done/);
});

test('submit counts exactly the tokens of a file prepare estimated in part', async (t) => {
  const { work, json } = await setup(t);
  // 1,500 rows: past the first 1,000 titles, prepare counts one in 64 exactly and estimates the rest.
  const csv = path.join(tempDir(t), 'catalog.csv');
  const out = createWriteStream(csv);
  await writeCatalog(out, 1500);
  await new Promise<void>((resolve) => out.end(resolve));
  const prepared = await json(['prepare', csv, '--embed-fields', 'title']);
  assert.ok(prepared.estimatedTokens > 0, `${prepared.estimatedTokens} tokens estimated`);
  const exactTokens = requestLines(work).reduce((n, l) => n + countTokens(l.body.input, { disallowedSpecial: new Set() }), 0);
  assert.notEqual(prepared.tokens, exactTokens, 'the estimate is not the exact count');
  await json(['submit']);
  const report = await json(['status']);
  assert.equal(report.totals.tokens, exactTokens, 'submit counted the file exactly before enqueueing it');
});

test('a queue limit is hit and recovered: the batch goes back to the queue, not to the failures', async (t) => {
  // Room in the account's queue for one file's tokens at a time; the tool's own budget is set too high on purpose.
  // Batches run slowly (10 lines/s) so the first is surely still enqueued when the second is validated, however
  // late the first status call comes on a loaded machine.
  const { json, client } = await setup(t, { engine: { enqueuedTokenLimit: 1500, linesPerSecond: 10 } });
  await json(['prepare', fixture('catalog.csv'), '--set', 'max_requests_per_file=50']);
  const env = { EMBATCH_QUEUE_RETRY_DELAY: '0.5' };
  await json(['submit'], env);
  const requeued = await until(
    () => json(['status'], env),
    (r) => r.jobs.some((j: { error: string | null; state: string }) => j.error?.includes('token_limit_exceeded') && j.state === 'uploaded'),
  );
  assert.equal(requeued.strings.failedPermanent, 0);
  const final = await until(
    async () => {
      await json(['submit'], env);
      return json(['download'], env).then(() => json(['status'], env));
    },
    (r) => r.totals.downloaded === 2,
    40_000,
  );
  assert.equal(final.totals.completed, 93);
  const batches = await allBatches(client);
  assert.ok(batches.some((b) => b.status === 'failed' && b.errors?.data?.[0]?.code === 'token_limit_exceeded'));
  assert.equal(batches.filter((b) => b.status === 'completed').length, 2);
});

test('an expired batch is salvaged by retry until 100% of strings are embedded', async (t) => {
  const { work, json } = await setup(t, { engine: { linesPerSecond: 15, completionWindowSeconds: 4 } });
  await json(['prepare', fixture('catalog.csv')]);
  await json(['submit']);
  await until(() => json(['status']), (r) => r.totals.ended === 1);
  const dl = await json(['download']);
  assert.ok(dl.failedLines > 0 && dl.embedded > 0, `partial output kept: ${JSON.stringify(dl)}`);
  const errors = readFileSync(path.join(work, 'results', 'batch_errors_000001.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(errors.every((e) => e.error.code === 'batch_expired'));

  for (let round = 0; round < 4; round++) {
    const status = await json(['status']);
    if (status.strings.failedRetryable === 0 && status.totals.active === 0 && status.totals.ended === 0) break;
    const retry = await json(['retry']);
    if (retry.requeued) await json(['submit']);
    await until(() => json(['status']), (r) => r.totals.active === 0);
    await json(['download']);
  }
  const ids = embeddedIds(work);
  assert.equal(new Set(ids).size, 93, '100% of strings embedded');
  assert.equal(ids.length, 93, 'none embedded twice');
  const final = await json(['status']);
  assert.equal(final.strings.failedRetryable + final.strings.queuedForRetry + final.strings.failedPermanent, 0);
});

test('killed between upload and create, or between create and saving it: no duplicate batch after rerun', async (t) => {
  for (const point of ['after-upload', 'after-create']) {
    const { cli, json, client } = await setup(t);
    await json(['prepare', fixture('catalog.csv')]);
    const crashed = await cli(['submit'], { EMBATCH_TEST_CRASH_AT: point });
    assert.equal(crashed.signal, 'SIGKILL', `${point}: the process died there`);
    const resumed = await json(['submit']);
    assert.equal(resumed.submitted + (point === 'after-create' ? 1 : 0), 1);
    const batches = await allBatches(client);
    assert.equal(batches.length, 1, `${point}: exactly one batch`);
    let uploads = 0;
    for await (const f of client.files.list({ purpose: 'batch' })) if (f.purpose === 'batch') uploads++;
    assert.equal(uploads, 1, `${point}: the file was uploaded once`);
    const status = await json(['status']);
    assert.equal(status.jobs[0].batchId, batches[0]!.id);
  }
});

test('a truncated download is detected and redone', async (t) => {
  const { work, json } = await setup(t, { faults: { truncateFirstDownloads: 1 } });
  await json(['prepare', fixture('catalog.csv')]);
  await json(['submit']);
  await until(() => json(['status']), (r) => r.totals.ended === 1);
  const dl = await json(['download']);
  assert.equal(dl.redownloads, 1);
  assert.equal(dl.embedded, 93);
  const file = path.join(work, 'results', 'batch_results_000001.jsonl');
  assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 93);
  assert.ok(!readdirSync(path.join(work, 'results')).some((n) => n.endsWith('.partial')));
});

test('a wrong API key: exit 1, a clear message, and the key never printed', async (t) => {
  const { cli, json } = await setup(t);
  await json(['prepare', fixture('catalog.csv')]);
  const wrong = 'sk-wrong-key-0123456789abcdef';
  const r = await cli(['submit'], { OPENAI_API_KEY: wrong });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /rejected the key \(401\)/);
  assert.ok(!r.stderr.includes(wrong) && !r.stdout.includes(wrong));
  const none = await runCli(['submit', '--work-dir', tempDir(t)], { env: {} });
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no OpenAI API key/);
});

test('the API key never reaches logs, state, request or result files', async (t) => {
  const { work, cli, json } = await setup(t);
  const outputs: string[] = [];
  const run = async (args: string[]) => {
    const r = await cli(args);
    outputs.push(r.stdout, r.stderr);
    assert.equal(r.code, 0, r.stderr);
  };
  await run(['prepare', fixture('catalog.csv')]);
  await run(['submit', '--json']);
  await until(() => json(['status']), (r) => r.totals.ended === 1);
  await run(['download']);
  await run(['status', '--json']);
  for (const o of outputs) assert.ok(!o.includes(KEY));
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const n of readdirSync(dir)) {
      const p = path.join(dir, n);
      if (statSync(p).isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk(work);
  assert.ok(files.length > 5);
  for (const f of files) assert.ok(!readFileSync(f).includes(KEY), `${f} holds the key`);
});

test('run with automatic polling goes from CSV to downloaded results in one command; cancel and reset', async (t) => {
  const { work, json, cli } = await setup(t);
  const r = await json(['run', fixture('catalog.csv'), '--wait', '--sink', 'none', '--set', 'batch_poll_interval=0.3']);
  assert.equal(r.done, true);
  assert.equal(r.status.totals.downloaded, 1);
  assert.equal(embeddedIds(work).length, 93);

  const { json: json2, client } = await setup(t, { engine: { linesPerSecond: 5 } });
  await json2(['prepare', fixture('catalog.csv')]);
  await json2(['submit']);
  const cancelled = await json2(['cancel']);
  assert.equal(cancelled.cancelled.length, 1);
  await until(async () => (await allBatches(client))[0]!.status, (s) => s === 'cancelled');

  const refused = await cli(['reset']);
  assert.equal(refused.code, 2, 'reset without --yes off a terminal is refused');
  assert.equal((await cli(['reset', '--yes'])).code, 0);
  assert.deepEqual(readdirSync(work), []);
});

test('under 429s, 500s, connection resets and a stalled download the cycle still completes; 400 lines are reported as permanent', async (t) => {
  const { work, json, sim } = await setup(t, {
    engine: { lineBadRequestRate: 0.05, lineServerErrorRate: 0.05 },
    faults: { rate429: 0.1, retryAfterSeconds: 0.2, rate500: 0.1, rateReset: 0.05, rateStall: 0.3, seed: 7 },
  });
  const env = { EMBATCH_DOWNLOAD_IDLE_TIMEOUT: '1', EMBATCH_MAX_RETRY_ATTEMPTS: '5' };
  await json(['prepare', fixture('catalog.csv'), '--set', 'max_requests_per_file=30'], env);
  for (let round = 0; round < 8; round++) {
    await json(['submit'], env);
    await until(() => json(['status'], env), (r) => r.totals.active === 0 && r.totals.queued === 0, 30_000);
    await json(['download'], env);
    const s = await json(['status'], env);
    if (s.strings.failedRetryable === 0 && s.strings.queuedForRetry === 0) break;
    await json(['retry'], env);
  }
  const final = await json(['status'], env);
  const retry = await json(['retry'], env);
  const embedded = new Set(embeddedIds(work));
  // Every string ends as exactly one of embedded or failed-with-reason.
  assert.equal(embedded.size + final.strings.failedPermanent + final.strings.failedExhausted, 93);
  assert.ok(final.strings.failedPermanent > 0, 'some lines were rejected for good');
  assert.ok(retry.permanentSamples.every((p: { code: string; message: string }) => p.code === 'invalid_value' && p.message.length > 0));
  assert.ok((sim.stats.fault_429 ?? 0) + (sim.stats.fault_500 ?? 0) + (sim.stats.fault_reset ?? 0) > 0, JSON.stringify(sim.stats));
});

test('a batch that fails validation fails each of its strings with the batch\'s reason: status, retry and run say so', async (t) => {
  // An OpenAI-compatible server's model name the simulator (like OpenAI) does not have: the batch fails as a whole.
  const { work, cli, json } = await setup(t);
  const env = { EMBATCH_MODEL: 'text-embeding-3-small', EMBATCH_ALLOW_UNKNOWN_MODEL: 'true' };
  const r = await cli(['run', fixture('catalog.csv'), '--wait', '--sink', 'none', '--json', '--set', 'batch_poll_interval=0.2'], env);
  assert.equal(r.code, 1, 'strings failed for good: not a success');
  assert.match(r.stderr, /93 string\(s\) failed for good/);
  const run = JSON.parse(r.stdout);
  assert.equal(run.done, true, 'nothing left to do');
  assert.equal(run.status.strings.failedPermanent, 93, 'every string of the file, none lost');
  assert.equal(run.status.totals.failed, 93);
  assert.match(run.status.jobs[0].error, /^model_not_found \(line 1\): The model `text-embeding-3-small` does not exist/);
  assert.match(run.status.next, /93 string\(s\) failed for good \(93 refused by the API/);
  const retry = await json(['retry'], env);
  assert.equal(retry.requeued, 0, 'a permanent failure is not retried');
  assert.equal(retry.permanent, 93);
  assert.equal(retry.permanentSamples[0].code, 'model_not_found');
  // Read again (a rerun of the same step after a crash) it is the same failure, not another attempt.
  const { StateStore } = await import('../src/store.js');
  const store = await StateStore.open(work);
  try {
    for await (const [, f] of store.failureRecords()) assert.equal(f.attempts, 1);
  } finally {
    await store.close();
  }
});

test('cancel of a batch that has already ended is not an error: its state is read instead', async (t) => {
  const { json, sim, client } = await setup(t, { engine: { linesPerSecond: 1 } });
  await json(['prepare', fixture('catalog.csv')]);
  await json(['submit']);
  await until(() => json(['status']), (r) => r.jobs[0].status === 'in_progress');
  // The batch ends at the API while the work directory still has it in progress.
  sim.engine.options.linesPerSecond = 100_000;
  await until(async () => (await allBatches(client))[0]!.status, (s) => s === 'completed');
  const c = await json(['cancel']);
  assert.deepEqual(c.cancelled, []);
  assert.equal(c.alreadyEnded.length, 1);
  const s = await json(['status', '--offline']);
  assert.equal(s.totals.ended, 1, 'the stored state now says it ended');
  assert.equal(s.jobs[0].status, 'completed');
  assert.equal((sim.stats['POST /batches/{id}/cancel'] ?? 0), 1, 'asked once: a 409 is an answer, not retried');
});
