import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { countTokens } from 'gpt-tokenizer/encoding/cl100k_base';
import { writeCatalog } from '../scripts/gen-catalog.js';
import { allBatches, embeddedIds, KEY, setup, untilState } from './batch-support.js';
import { CLI, fixture, requestLines, runCli, tempDir, waitFor } from './helpers.js';

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

  const live = await untilState(
    () => json(['status']),
    (r) => r.jobs.some((j: { status: string; completed: number }) => j.status === 'in_progress' && j.completed > 0),
  );
  assert.ok(live.totals.completed < 93, 'live counts while in progress');
  sim.engine.options.linesPerSecond = 100_000;
  const report = await untilState(
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
  await untilState(() => json(['status']), (r) => r.totals.ended === 1);
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
  await untilState(async () => (await allBatches(client))[0]!.status, (s) => s === 'cancelled');

  const refused = await cli(['reset']);
  assert.equal(refused.code, 2, 'reset without --yes off a terminal is refused');
  assert.equal((await cli(['reset', '--yes'])).code, 0);
  assert.deepEqual(readdirSync(work), []);
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
  assert.equal(run.status.failures.failedPermanent, 93, 'every string of the file, none lost');
  assert.equal(run.status.totals.failed, 93);
  assert.match(run.status.jobs[0].error, /^model_not_found \(line 1\): The model `text-embeding-3-small` does not exist/);
  assert.match(run.status.next, /93 string\(s\) failed for good \(93 refused by the API/);
  assert.deepEqual(run.status.strings, { total: 93, skipped: 0, pending: 0, submitted: 0, embedded: 0, indexed: 0, failed_retryable: 0, failed_permanent: 93 });
  const retry = await json(['retry'], env, 1);
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
  await untilState(() => json(['status']), (r) => r.jobs[0].status === 'in_progress');
  // The batch ends at the API while the work directory still has it in progress.
  sim.engine.options.linesPerSecond = 100_000;
  await untilState(async () => (await allBatches(client))[0]!.status, (s) => s === 'completed');
  const c = await json(['cancel']);
  assert.deepEqual(c.cancelled, []);
  assert.equal(c.alreadyEnded.length, 1);
  const s = await json(['status', '--offline']);
  assert.equal(s.totals.ended, 1, 'the stored state now says it ended');
  assert.equal(s.jobs[0].status, 'completed');
  assert.equal((sim.stats['POST /batches/{id}/cancel'] ?? 0), 1, 'asked once: a 409 is an answer, not retried');
});

test('Ctrl-C during run --wait stops polling gently: exit 1, everything kept, and the next run finishes the work', async (t) => {
  // 5 lines/s: the batch is surely still running when the interrupt comes.
  const { work, sim, json } = await setup(t, { engine: { linesPerSecond: 5 } });
  const child = spawn(process.execPath, [CLI, 'run', fixture('catalog.csv'), '--wait', '--sink', 'none', '--work-dir', work, '--set', 'batch_poll_interval=0.3'], { env: { ...process.env, OPENAI_BASE_URL: sim.baseURL, OPENAI_API_KEY: KEY } });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await waitFor(() => /batch\(es\) running/.test(stderr));
  child.kill('SIGINT');
  assert.equal(await exited, 1, stderr);
  assert.match(stderr, /interrupted: finishing the current step/);
  const kept = await json(['status', '--offline']);
  assert.deepEqual([kept.totals.files, kept.totals.queued], [1, 0], 'the submitted batch is kept');
  const done = await json(['run', '--wait', '--sink', 'none', '--set', 'batch_poll_interval=0.3']);
  assert.equal(done.done, true);
  assert.equal(done.status.strings.embedded, done.status.strings.total);
});
