import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import weaviate from 'weaviate-client';
import { spawn } from 'node:child_process';
import { writeCatalog } from '../scripts/gen-catalog.js';
import { start, stop } from '../scripts/weaviate.js';
import { CLI, freeze, runCli, tempDir, waitFor } from './helpers.js';
import { weaviateForTests } from './weaviate-support.js';

// This file stops and restarts its server, so it always starts one of its own.
const server = await weaviateForTests({ own: true });
after(() => server.target?.release());

test('Weaviate stopped in the middle of an index run and restarted: nothing lost, nothing duplicated', { skip: server.skip }, async (t) => {
  const target = server.target!;
  const work = tempDir(t);
  const csv = path.join(tempDir(t), 'c.csv');
  const out = createWriteStream(csv);
  await writeCatalog(out, 1500);
  await new Promise<void>((r) => out.end(() => r()));
  const env = {
    WEAVIATE_URL: target.url,
    WEAVIATE_GRPC_PORT: String(target.grpcPort),
    EMBATCH_DIMENSIONS: '64',
    EMBATCH_WEAVIATE__BATCH_SIZE: '100',
    EMBATCH_WEAVIATE__CONCURRENCY: '1',
    EMBATCH_WEAVIATE__REQUEST_RETRIES: '1',
    EMBATCH_WEAVIATE__TIMEOUT_INSERT: '5',
    EMBATCH_BATCH_POLL_INTERVAL: '0.3',
  };
  const prepared = await runCli(['run', csv, '--simulate', '--wait', '--sink', 'none', '--work-dir', work, '--json'], { env });
  assert.equal(prepared.code, 0, prepared.stderr);

  const child = spawn(process.execPath, [CLI, 'index', '--work-dir', work, '--json'], { env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  // Once Weaviate holds more than one request's objects, the index run is frozen, Weaviate stopped, and the run let go
  // on: it meets a stopped server in the middle of its work, whatever the machine's speed. One request at a time, the
  // second is sent only once the run has the first one's acknowledgement, which it records when it stops, so the rerun
  // has something to skip.
  const watch = await weaviate.connectToLocal({ host: target.host, port: target.httpPort, grpcPort: target.grpcPort });
  let held = 0;
  await waitFor(async () => (held = await watch.collections.get('EntityString').aggregate.overAll().then((a) => a.totalCount, () => 0)) > 100);
  await watch.close();
  await freeze(child.pid!);
  await stop(target.own!, () => {});
  child.kill('SIGCONT');
  const code = await exited;
  assert.ok(held > 0, 'stopped after objects were acknowledged');
  assert.equal(code, 1, `index fails while Weaviate is down: ${stderr}`);
  assert.match(stderr, /Weaviate could not take \d+ object\(s\) after \d+ attempts|cannot connect to Weaviate/);

  await start(target.own!, { log: () => {} });
  // Small requests one at a time were for the stop to land mid-run; the rest goes at the default pace.
  const fast = { ...env, EMBATCH_WEAVIATE__BATCH_SIZE: '200', EMBATCH_WEAVIATE__CONCURRENCY: '4' };
  const rerun = await runCli(['index', '--work-dir', work, '--json'], { env: fast });
  assert.equal(rerun.code, 0, rerun.stderr);
  const summary = JSON.parse(rerun.stdout);
  assert.ok(summary.alreadyIndexed > 0, 'the rerun skipped what was acknowledged before the stop');

  const c = await weaviate.connectToLocal({ host: target.host, port: target.httpPort, grpcPort: target.grpcPort });
  try {
    const total = (await c.collections.get('EntityString').aggregate.overAll()).totalCount;
    assert.equal(total, summary.alreadyIndexed + summary.acked, 'every object once');
    // What a clean replay of the same files sends: the count does not change.
    const replay = await runCli(['replay', path.join(work, 'results', 'batch_results_*.jsonl'), '--work-dir', work, '--json'], { env: fast });
    assert.equal(replay.code, 0, replay.stderr);
    assert.equal(JSON.parse(replay.stdout).acked, total);
    assert.equal((await c.collections.get('EntityString').aggregate.overAll()).totalCount, total);
  } finally {
    await c.close();
  }
});
