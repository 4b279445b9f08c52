import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseDuration, RateLimiter } from '../src/rate-limiter.js';
import { startSimulator, type SimulatorOptions } from '../src/simulator/server.js';
import { CLI, fixture, fixtureStrings, runCli, tempDir, waitFor } from './helpers.js';

const KEY = 'sk-embatch-realtime-test-1234';

async function setup(t: Parameters<typeof tempDir>[0], options: Omit<SimulatorOptions, 'dir'> = {}) {
  const work = tempDir(t);
  const sim = await startSimulator({ dir: path.join(tempDir(t), 'sim'), apiKey: KEY, ...options });
  t.after(() => sim.close());
  const env = { OPENAI_BASE_URL: sim.baseURL, OPENAI_API_KEY: KEY, EMBATCH_REALTIME__BURST_SECONDS: '1' };
  const cli = (args: string[], more: Record<string, string> = {}) => runCli([...args, '--work-dir', work], { env: { ...env, ...more } });
  return { work, sim, cli, env };
}

const objects = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { uuid: string; vector: string; properties: { field_type: string } })
    .sort((a, b) => (a.uuid < b.uuid ? -1 : 1));

test('real-time at the configured limits embeds every string into the same objects as a batch run', async (t) => {
  const { work, cli, sim } = await setup(t, { limits: { rpm: 120, tpm: 20_000 } });
  const out = path.join(work, 'rt.jsonl');
  const started = Date.now();
  const r = await cli(['run', fixture('catalog.csv'), '--realtime', '--json', '--sink', `jsonl:${out}`, '--set', 'realtime.rpm=120', '--set', 'realtime.tpm=20000', '--set', 'realtime.max_inputs_per_request=8']);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.realtime.embedded, 93);
  assert.equal(summary.realtime.failed, 0);
  assert.ok(summary.realtime.requests >= 12, 'many inputs per request, within the configured cap');
  assert.equal(sim.stats.rate_limited ?? 0, 0, 'the client kept within the limits: no 429');
  // 12 requests at 120 RPM with a 1 s burst: at least ~4 s.
  assert.ok(Date.now() - started > 3000);

  const batch = await setup(t);
  const bout = path.join(batch.work, 'batch.jsonl');
  const b = await batch.cli(['run', fixture('catalog.csv'), '--simulate', '--wait', '--json', '--sink', `jsonl:${bout}`, '--set', 'batch_poll_interval=0.3']);
  assert.equal(b.code, 0, b.stderr);
  assert.deepEqual(objects(out), objects(bout), 'same ids, properties and vectors in both modes');
  // And the real-time output replays like a batch result file.
  const replay = await cli(['replay', path.join(work, 'results', 'batch_results_rt_*.jsonl'), '--sink', `jsonl:${path.join(work, 'replayed.jsonl')}`, '--json']);
  assert.equal(replay.code, 0, replay.stderr);
  assert.deepEqual(objects(path.join(work, 'replayed.jsonl')), objects(out));
});

test('a burst of 429s and a storm of 500s are absorbed', async (t) => {
  const { work, cli, sim } = await setup(t, { faults: { rate429: 0.3, retryAfterSeconds: 0.1, rate500: 0.3, rateReset: 0.05, seed: 3 } });
  const r = await cli(['run', fixture('catalog.csv'), '--realtime', '--json', '--sink', 'none', '--set', 'realtime.max_inputs_per_request=5', '--set', 'realtime.max_retries=10']);
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout).realtime;
  assert.equal(s.embedded, 93);
  assert.ok(s.rateLimited > 0 && s.retries > 0, JSON.stringify(s));
  assert.ok((sim.stats.fault_429 ?? 0) > 0 && (sim.stats.fault_500 ?? 0) > 0);
  assert.ok(readFileSync(path.join(work, 'results', 'batch_results_rt_000001.jsonl'), 'utf8').trim().split('\n').length === 93);
});

test('insufficient_quota stops the run at once with exit 1 and a clear message', async (t) => {
  const { cli, sim } = await setup(t, { limits: { quotaTokens: 300 } });
  const r = await cli(['run', fixture('catalog.csv'), '--realtime', '--sink', 'none', '--set', 'realtime.max_inputs_per_request=5']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no quota left \(insufficient_quota\)/);
  assert.ok((sim.stats.insufficient_quota ?? 0) <= 8, 'it did not keep retrying');
});

test('one bad input fails only itself: the request is split and the other inputs are embedded', async (t) => {
  const { work, cli, sim } = await setup(t, { limits: { rejectInputsContaining: 'REJECT-ME' } });
  const csv = path.join(work, 'bad.csv');
  writeFileSync(csv, readFileSync(fixture('catalog.csv'), 'utf8').replace('Winterreise', 'Winterreise REJECT-ME'));
  const r = await cli(['run', csv, '--realtime', '--json', '--sink', 'none']);
  assert.equal(r.code, 1, 'not everything was embedded');
  const s = JSON.parse(r.stdout);
  const marked = [...fixtureStrings(csv).strings.keys()].filter((text) => text.includes('REJECT-ME')).length;
  assert.ok(marked >= 1);
  assert.equal(s.realtime.failed, marked, 'exactly the strings holding the marker failed');
  assert.equal(s.realtime.embedded + s.realtime.failed, s.realtime.strings);
  assert.ok(s.realtime.splits > 0);
  assert.equal(s.status.failures.failedPermanent, s.realtime.failed);
  assert.deepEqual(s.status.strings, { total: s.realtime.strings, skipped: 0, pending: 0, submitted: 0, embedded: s.realtime.strings - marked, indexed: 0, failed_retryable: 0, failed_permanent: marked });
  assert.ok((sim.stats.bad_input ?? 0) > 0);
});

test('killed mid-run and rerun, only strings without a stored vector are requested again', async (t) => {
  const { work, sim, env } = await setup(t, { limits: { rpm: 300 } });
  const args = ['run', fixture('catalog.csv'), '--realtime', '--sink', 'none', '--work-dir', work, '--set', 'realtime.rpm=300', '--set', 'realtime.max_inputs_per_request=2', '--set', 'realtime.concurrency=2'];
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: 'ignore' });
  const closed = new Promise((r) => child.on('close', r));
  // Killed once 20 strings are stored (at 300 requests a minute, two inputs each, the run needs ~9 s more).
  const out = path.join(work, 'results', 'batch_results_rt_000001.jsonl');
  const stored = () => (existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter(Boolean).length : 0);
  await waitFor(() => stored() >= 20);
  child.kill('SIGKILL');
  await closed;
  const before = sim.stats.embedding_inputs ?? 0;
  assert.ok(before >= 20 && before < 93, `killed mid-way (${before} inputs sent)`);
  // The ledger after the kill: the file's real-time run stopped midway, so its strings are all still "submitted".
  const killed = await runCli(['status', '--offline', '--json', '--work-dir', work], { env });
  assert.deepEqual(JSON.parse(killed.stdout).strings, { total: 93, skipped: 0, pending: 0, submitted: 93, embedded: 0, indexed: 0, failed_retryable: 0, failed_permanent: 0 });
  const rerun = await runCli([...args, '--json'], { env });
  assert.equal(rerun.code, 0, rerun.stderr);
  const s = JSON.parse(rerun.stdout).realtime;
  assert.equal(s.embedded + s.alreadyEmbedded, 93);
  assert.ok(s.alreadyEmbedded > 0);
  // At most the requests in flight at the kill (2 x 2 inputs) are asked for twice.
  assert.ok((sim.stats.embedding_inputs ?? 0) <= 93 + 4, `inputs sent in all: ${sim.stats.embedding_inputs}`);
  const lines = readFileSync(path.join(work, 'results', 'batch_results_rt_000001.jsonl'), 'utf8').trim().split('\n');
  assert.equal(new Set(lines.map((l) => JSON.parse(l).custom_id)).size, 93);
  assert.equal(lines.length, 93, 'no string stored twice');
});

/**
 * A clock of the test's own: sleepers wake when the test moves time on, to the next wake-up once everything that can
 * run has run. The limiter's waits are then exact, whatever the machine's load.
 */
class FakeClock {
  now = 0;
  #sleepers: Array<{ at: number; resolve: () => void }> = [];
  sleep = (ms: number, signal?: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const sleeper = { at: this.now + ms, resolve };
      this.#sleepers.push(sleeper);
      signal?.addEventListener('abort', () => {
        this.#sleepers = this.#sleepers.filter((x) => x !== sleeper);
        reject(signal.reason);
      }, { once: true });
    });
  /** Runs `work` to its end, moving time on as it waits; or stops (undefined) before moving past `untilMs`. */
  async run<T>(work: Promise<T>, untilMs = Infinity): Promise<T | undefined> {
    let settled = false;
    work.then(() => (settled = true), () => (settled = true));
    for (;;) {
      await new Promise((r) => setImmediate(r));
      if (settled) return work;
      assert.ok(this.#sleepers.length, 'the work waits for something other than the clock');
      const next = Math.min(...this.#sleepers.map((x) => x.at));
      if (next > untilMs) return undefined;
      this.now = next;
      const due = this.#sleepers.filter((x) => x.at <= next);
      this.#sleepers = this.#sleepers.filter((x) => x.at > next);
      for (const x of due) x.resolve();
    }
  }
}

test('the rate limiter reserves before sending and never exceeds its budget; durations parse', async () => {
  const clock = new FakeClock();
  const limiter = new RateLimiter({ rpm: 600, tpm: 60_000, tpd: null, burstSeconds: 1 }, 0, { now: () => clock.now, sleep: clock.sleep });
  const sentAt: number[] = [];
  // 10 requests of 500 tokens: the 1 s burst allows 1,000 tokens at once, then the bucket refills 1,000 a second.
  await clock.run(Promise.all(Array.from({ length: 10 }, async () => {
    await limiter.reserve(500);
    sentAt.push(clock.now);
  })));
  assert.deepEqual(sentAt, [0, 0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000], 'two at once, then one each half second');
  // Tokens already spent today count against the daily cap: 900 of 1,000 used leaves room for 100 now.
  const daily = new RateLimiter({ rpm: 6000, tpm: 6_000_000, tpd: 1000, burstSeconds: 60 }, 900, { now: () => clock.now, sleep: clock.sleep });
  const before = clock.now;
  await clock.run(daily.reserve(100));
  assert.equal(clock.now, before, 'the 100 left went at once');
  const blocked = new AbortController();
  const late = daily.reserve(100, blocked.signal);
  // Over the daily cap it waits for the day's refill: 100 tokens at 1,000 a day is 2.4 hours.
  assert.equal(await clock.run(late, before + 2 * 3_600_000), undefined, 'still waiting two hours later');
  blocked.abort();
  await assert.rejects(late, 'only the abort ends it');
  assert.equal(parseDuration('12ms'), 12);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('2m3s'), 123_000);
  assert.equal(parseDuration('7'), 7000);
  assert.equal(parseDuration(null), undefined);
});

test('an answer without some of the embeddings asked for: those strings are recorded as failed, then retried', async (t) => {
  const { cli, sim } = await setup(t, { limits: { omitInputsContaining: 'Winterreise' } });
  const r = await cli(['run', fixture('catalog.csv'), '--realtime', '--json', '--sink', 'none']);
  assert.equal(r.code, 1, 'not everything was embedded');
  const s = JSON.parse(r.stdout);
  const missing = [...fixtureStrings('catalog.csv').strings.keys()].filter((text) => text.includes('Winterreise')).length;
  assert.ok(missing >= 1);
  assert.equal(s.realtime.failed, missing, 'each string the answer left out is recorded');
  assert.equal(s.realtime.embedded + s.realtime.failed, s.realtime.strings);
  assert.equal(s.status.failures.failedRetryable, missing);
  assert.equal(sim.stats.embedding_inputs, s.realtime.strings, 'each asked for once');
  // The fault gone (another simulator without it), retry writes them into a new file, and a real-time run embeds
  // exactly them.
  const retry = JSON.parse((await cli(['retry', '--json'])).stdout);
  assert.equal(retry.requeued, missing);
  const healthy = await startSimulator({ dir: path.join(tempDir(t), 'sim2'), apiKey: KEY });
  t.after(() => healthy.close());
  const again = await cli(['run', '--realtime', '--json', '--sink', 'none'], { OPENAI_BASE_URL: healthy.baseURL });
  assert.equal(again.code, 0, again.stderr);
  const a = JSON.parse(again.stdout);
  assert.deepEqual([a.realtime.embedded, a.realtime.failed, healthy.stats.embedding_inputs], [missing, 0, missing]);
  assert.deepEqual(a.status.failures, { failedRetryable: 0, failedPermanent: 0, failedExhausted: 0, queuedForRetry: 0 }, 'no failure left');
});
