/** The batch lifecycle under trouble: queue limits, expiry, kills around submit, broken downloads, API faults. */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { allBatches, embeddedIds, setup, untilState } from './batch-support.js';
import { fixture } from './helpers.js';

test('a queue limit is hit and recovered: the batch goes back to the queue, not to the failures', async (t) => {
  // Room in the account's queue for one file's tokens at a time; the tool's own budget is set too high on purpose.
  // Batches run slowly (3 lines/s: 17 s for the first file) so the first is surely still enqueued when the second is
  // validated, however slowly the CLI uploads and creates the second on a loaded machine (at 10 lines/s it once was not).
  const { json, client } = await setup(t, { engine: { enqueuedTokenLimit: 1500, linesPerSecond: 3 } });
  await json(['prepare', fixture('catalog.csv'), '--set', 'max_requests_per_file=50']);
  const env = { EMBATCH_QUEUE_RETRY_DELAY: '0.5' };
  await json(['submit'], env);
  const requeued = await untilState(
    () => json(['status'], env),
    (r) => r.jobs.some((j: { error: string | null; state: string }) => j.error?.includes('token_limit_exceeded') && j.state === 'uploaded'),
  );
  assert.equal(requeued.failures.failedPermanent, 0);
  const final = await untilState(
    async () => {
      await json(['submit'], env);
      return json(['download'], env).then(() => json(['status'], env));
    },
    (r) => r.totals.downloaded === 2,
  );
  assert.equal(final.totals.completed, 93);
  const batches = await allBatches(client);
  assert.ok(batches.some((b) => b.status === 'failed' && b.errors?.data?.[0]?.code === 'token_limit_exceeded'));
  assert.equal(batches.filter((b) => b.status === 'completed').length, 2);
});

test('an expired batch is salvaged by retry until 100% of strings are embedded', async (t) => {
  const { work, json } = await setup(t, { engine: { linesPerSecond: 14, completionWindowSeconds: 4 } });
  await json(['prepare', fixture('catalog.csv')]);
  await json(['submit']);
  await untilState(() => json(['status']), (r) => r.totals.ended === 1);
  const dl = await json(['download'], {}, 1);
  // The simulator's pace: in progress 0.2 s after creation, 14 lines a second, expired at 4 s: the 53 lines done by
  // then (3.8 s x 14 = 53.2) are kept, the rest fail as batch_expired.
  const done = 53;
  assert.deepEqual([dl.embedded, dl.failedLines], [done, 93 - done], `partial output kept: ${JSON.stringify(dl)}`);
  const errors = readFileSync(path.join(work, 'results', 'batch_errors_000001.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(errors.every((e) => e.error.code === 'batch_expired'));

  for (let round = 0; round < 4; round++) {
    const status = await json(['status']);
    if (status.failures.failedRetryable === 0 && status.totals.active === 0 && status.totals.ended === 0) break;
    const retry = await json(['retry']);
    if (retry.requeued) await json(['submit']);
    await untilState(() => json(['status']), (r) => r.totals.active === 0);
    await json(['download'], {}, null);
  }
  const ids = embeddedIds(work);
  assert.equal(new Set(ids).size, 93, '100% of strings embedded');
  assert.equal(ids.length, 93, 'none embedded twice');
  const final = await json(['status']);
  assert.equal(final.failures.failedRetryable + final.failures.queuedForRetry + final.failures.failedPermanent, 0);
  assert.deepEqual(final.strings, { total: 93, skipped: 0, pending: 0, submitted: 0, embedded: 93, indexed: 0, failed_retryable: 0, failed_permanent: 0 }, 'the ledger: every string embedded, none failed');
  await json(['download'], {}, 0); // nothing failed any more: exit code 0
});

test('killed between upload and create, or between create and saving it: no duplicate batch after rerun', async (t) => {
  for (const point of ['after-upload', 'after-create']) {
    const { cli, json, client } = await setup(t);
    await json(['prepare', fixture('catalog.csv')]);
    const crashed = await cli(['submit'], { EMBATCH_TEST_CRASH_AT: point });
    assert.equal(crashed.signal, 'SIGKILL', `${point}: the process died there`);
    // The ledger after the crash: the batch may exist at OpenAI, but until it is seen its strings are pending.
    const offline = await json(['status', '--offline']);
    assert.deepEqual(offline.strings, { total: 93, skipped: 0, pending: 93, submitted: 0, embedded: 0, indexed: 0, failed_retryable: 0, failed_permanent: 0 }, point);
    const resumed = await json(['submit']);
    assert.equal(resumed.submitted + (point === 'after-create' ? 1 : 0), 1);
    const batches = await allBatches(client);
    assert.equal(batches.length, 1, `${point}: exactly one batch`);
    let uploads = 0;
    for await (const f of client.files.list({ purpose: 'batch' })) if (f.purpose === 'batch') uploads++;
    assert.equal(uploads, 1, `${point}: the file was uploaded once`);
    const status = await json(['status']);
    assert.equal(status.jobs[0].batchId, batches[0]!.id);
    assert.equal(status.strings.submitted, 93, `${point}: every string in the live batch`);
  }
});

test('a truncated download is detected and redone', async (t) => {
  const { work, json } = await setup(t, { faults: { truncateFirstDownloads: 1 } });
  await json(['prepare', fixture('catalog.csv')]);
  await json(['submit']);
  await untilState(() => json(['status']), (r) => r.totals.ended === 1);
  const dl = await json(['download']);
  assert.equal(dl.redownloads, 1);
  assert.equal(dl.embedded, 93);
  const file = path.join(work, 'results', 'batch_results_000001.jsonl');
  assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 93);
  assert.ok(!readdirSync(path.join(work, 'results')).some((n) => n.endsWith('.partial')));
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
    await untilState(() => json(['status'], env), (r) => r.totals.active === 0 && r.totals.queued === 0);
    await json(['download'], env, null);
    const s = await json(['status'], env);
    if (s.failures.failedRetryable === 0 && s.failures.queuedForRetry === 0) break;
    await json(['retry'], env, null);
  }
  const final = await json(['status'], env);
  const retry = await json(['retry'], env, 1);
  const embedded = new Set(embeddedIds(work));
  // Every string ends as exactly one of embedded or failed-with-reason.
  assert.equal(embedded.size + final.failures.failedPermanent + final.failures.failedExhausted, 93);
  assert.ok(final.failures.failedPermanent > 0, 'some lines were rejected for good');
  const l = final.strings;
  assert.deepEqual([l.total, l.embedded, l.failed_permanent, l.pending + l.submitted + l.indexed + l.skipped + l.failed_retryable], [93, embedded.size, 93 - embedded.size, 0], 'the ledger adds up');
  assert.ok(retry.permanentSamples.every((p: { code: string; message: string }) => p.code === 'invalid_value' && p.message.length > 0));
  assert.ok((sim.stats.fault_429 ?? 0) + (sim.stats.fault_500 ?? 0) + (sim.stats.fault_reset ?? 0) > 0, JSON.stringify(sim.stats));
});

test('an error line that names no request is counted, and the request without a line recorded as failed, not lost', async (t) => {
  const { json, sim, client } = await setup(t, { engine: { lineBadRequestRate: 0.2 } });
  await json(['prepare', fixture('catalog.csv')]);
  await json(['submit']);
  await untilState(() => json(['status']), (r) => r.totals.ended === 1);
  const [batch] = await allBatches(client);
  const failed = batch!.request_counts!.failed;
  assert.ok(failed > 1, `${failed} lines refused`);
  // One error line's custom_id made unreadable, the file's length unchanged (the download checks it).
  const errors = path.join(sim.engine.dir, 'files', `${batch!.error_file_id}.content`);
  const lines = readFileSync(errors, 'utf8').trim().split('\n');
  const victim = JSON.parse(lines[0]!).custom_id as string;
  lines[0] = lines[0]!.replace(victim, `zzzzzzzz${victim.slice(8)}`);
  writeFileSync(errors, lines.join('\n') + '\n');
  const dl = await json(['download'], {}, 1);
  assert.deepEqual([dl.embedded, dl.failedLines, dl.unmatchedErrorLines, dl.missingLines], [93 - failed, failed, 1, 1]);
  const status = await json(['status']);
  assert.deepEqual([status.failures.failedPermanent, status.failures.failedRetryable], [failed - 1, 1], 'the refused lines, and the request left without a line');
  assert.deepEqual(status.strings, { total: 93, skipped: 0, pending: 0, submitted: 0, embedded: 93 - failed, indexed: 0, failed_retryable: 1, failed_permanent: failed - 1 });
  const retry = await json(['retry'], {}, 1);
  assert.equal(retry.requeued, 1);
  assert.equal(JSON.parse(readFileSync(retry.files[0], 'utf8').trim()).custom_id, victim, 'exactly that request is asked again');
});
