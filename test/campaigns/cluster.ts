/**
 * Cluster campaign (RELIABILITY.md): a three-node Weaviate cluster of the pinned server on loopback, and nodes lost
 * in the middle of `embatch index`:
 *
 *   rf3-kill-freeze  replication factor 3, QUORUM: one node SIGKILLed mid-index, another SIGSTOPped until the CLI has
 *                    retried twice (no quorum meanwhile); the run must complete with 0 rejects, and after the killed
 *                    node's restart every object must read back at consistency ALL with its vector;
 *   rf1-kill         replication factor 1: a node SIGKILLed mid-index; `index` must exit non-zero with the server's
 *                    message and no reject; after the restart `index` completes, 0 objects lost or doubled, and
 *                    `verify` finds the store's marks equal to the cluster's content;
 *   rf3-rolling      replication factor 3: every node restarted in turn (SIGTERM, start) during one long `index`;
 *                    it completes, nothing lost.
 *
 * Nodes are disrupted while the CLI is frozen (SIGSTOP) at a count of objects, so "mid-index" does not depend on
 * timing. `npm test` runs the first two at 500 rows (test/weaviate-cluster.test.ts).
 *
 *   node dist/test/campaigns/cluster.js [--rows N]
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import weaviate, { type WeaviateClient } from 'weaviate-client';
import { hashValue, objectUuid } from '../../transforms/build-objects.js';
import { hashEmbedding } from '../../src/simulator/embedding.js';
import { CLI, fixtureStrings, freeze, runCli, until } from '../helpers.js';
import { weaviateClusterForTests, type ClusterForTests } from '../weaviate-support.js';
import { catalogFile, flag } from './harness.js';

export const DIMS = 8;

export interface Prepared {
  work: string;
  env: Record<string, string>;
  collection: string;
  objects: Array<{ text: string; field: string; uuid: string }>;
}

let n = 0;

/** A catalog of `rows` run through the simulator into result files, and the CLI's environment for the cluster. */
export async function prepareForCluster(cluster: ClusterForTests, dir: string, rows: number, settings: Record<string, string>): Promise<Prepared> {
  mkdirSync(dir, { recursive: true });
  const work = mkdtempSync(path.join(dir, 'work-'));
  const csv = await catalogFile(dir, rows);
  const target = cluster.target;
  const env: Record<string, string> = {
    WEAVIATE_URL: target.url,
    WEAVIATE_GRPC_PORT: String(target.grpcPort),
    EMBATCH_WEAVIATE__COLLECTION: `Cluster${process.pid}x${++n}`,
    EMBATCH_DIMENSIONS: String(DIMS),
    EMBATCH_BATCH_POLL_INTERVAL: '0.2',
    EMBATCH_SIMULATOR__VALIDATING_SECONDS: '0.1',
    EMBATCH_SIMULATOR__FINALIZING_SECONDS: '0.1',
    // Small requests, one at a time: the index takes long enough to lose nodes in its middle.
    EMBATCH_WEAVIATE__BATCH_SIZE: '20',
    EMBATCH_WEAVIATE__CONCURRENCY: '1',
    EMBATCH_WEAVIATE__TIMEOUT_INSERT: '20',
    ...settings,
  };
  const r = await runCli(['run', csv, '--simulate', '--wait', '--sink', 'none', '--json', '--work-dir', work], { env });
  if (r.code !== 0) throw new Error(`preparing the results failed: ${r.stderr}`);
  const { strings } = fixtureStrings(csv);
  const objects = [...strings].flatMap(([text, fields]) => [...fields.keys()].map((field) => ({ text, field, uuid: objectUuid(hashValue(text), field) })));
  return { work, env, collection: env.EMBATCH_WEAVIATE__COLLECTION!, objects };
}

export interface Disruption {
  /** Objects in the collection when the CLI is frozen and the step runs. */
  atCount: number;
  /** Runs while the CLI is frozen. */
  step(): Promise<void>;
  /** After the CLI resumes: waits for what the CLI must have done before the next step (see stderrHas). */
  then?(stderrHas: (re: RegExp, times: number) => Promise<void>): Promise<void>;
}

/** `embatch index` with disruptions at given counts of objects; returns its exit code and output. */
export async function indexDisrupted(p: Prepared, client: WeaviateClient, disruptions: Disruption[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, 'index', '--json', '--work-dir', p.work], { env: { ...process.env, ...p.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let exited = false;
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      exited = true;
      resolve(code);
    }),
  );
  const c = client.collections.get(p.collection);
  const count = async () => (await c.aggregate.overAll().catch(() => ({ totalCount: 0 }))).totalCount;
  const stderrHas = async (re: RegExp, times: number) => {
    await until(() => (stderr.match(new RegExp(re.source, 'g')) ?? []).length, (k) => k >= times || exited, 300_000, 50);
  };
  for (const d of disruptions) {
    await until(count, (k) => k >= d.atCount || exited, 300_000, 10);
    if (exited) break;
    await freeze(child.pid!);
    await d.step();
    child.kill('SIGCONT');
    await d.then?.(stderrHas);
  }
  return { code: await closed, stdout, stderr };
}

/** Waits until node `i` is listed as not HEALTHY (it was killed or frozen). */
export async function nodeDown(cluster: ClusterForTests, i: number): Promise<void> {
  await until(() => cluster.status().catch(() => []), (nodes) => nodes.some((node) => node.name === `node${i + 1}` && node.status !== 'HEALTHY'), 120_000, 100);
}

/** Every object reads back at consistency ALL with the vector the simulator gave its text. Returns how many did. */
export async function readBackAtAll(client: WeaviateClient, p: Prepared): Promise<number> {
  const c = client.collections.get(p.collection).withConsistency('ALL');
  let ok = 0;
  for (const o of p.objects) {
    const got = await c.query.fetchObjectById(o.uuid, { includeVector: true });
    assert.ok(got, `${o.uuid} (${o.field}) reads back at ALL`);
    const expected = hashEmbedding(o.text, DIMS);
    (got.vectors.default as number[]).forEach((x, d) => assert.ok(Math.abs(x - expected[d]!) < 1e-6, `${o.uuid}: vector`));
    ok++;
  }
  return ok;
}

export function rejectsWritten(p: Prepared): number {
  const file = path.join(p.work, 'index_rejects.jsonl');
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('weaviate_rejected')).length : 0;
}

export async function verifyCounts(p: Prepared): Promise<{ code: number | null; matching: number; missing: number; differs: number; unrecorded: number; extra: number }> {
  const v = await runCli(['verify', '--json', '--work-dir', p.work], { env: p.env });
  return { code: v.code, ...JSON.parse(v.stdout) };
}

async function campaign(rows: number): Promise<void> {
  const started = await weaviateClusterForTests(3);
  if (!started.cluster) throw new Error(started.skip);
  const cluster = started.cluster;
  const dir = mkdtempSync(path.join(tmpdir(), 'embatch-cluster-'));
  const t = cluster.target;
  const client = await weaviate.connectToLocal({ host: t.host, port: t.httpPort, grpcPort: t.grpcPort });
  const figures: Record<string, unknown> = {};
  try {
    {
      const p = await prepareForCluster(cluster, dir, rows, { EMBATCH_WEAVIATE__REPLICATION_FACTOR: '3', EMBATCH_WEAVIATE__CONSISTENCY_LEVEL: 'QUORUM' });
      const began = performance.now();
      const r = await indexDisrupted(p, client, [
        { atCount: Math.floor(p.objects.length / 4), step: async () => (process.kill(cluster.pid(1), 'SIGKILL'), nodeDown(cluster, 1)) },
        {
          atCount: Math.floor(p.objects.length / 2),
          step: async () => void process.kill(cluster.pid(2), 'SIGSTOP'),
          // No quorum while node3 is frozen: it stays frozen through two rounds of the CLI's retries.
          then: async (stderrHas) => {
            await stderrHas(/Weaviate could not take/, 2);
            process.kill(cluster.pid(2), 'SIGCONT');
          },
        },
      ]);
      const s = JSON.parse(r.stdout);
      await cluster.restart(1);
      figures['rf3-kill-freeze'] = { objects: p.objects.length, exit: r.code, rejects: rejectsWritten(p), acked: s.acked, retries: (r.stderr.match(/Weaviate could not take/g) ?? []).length, seconds: (performance.now() - began) / 1000, readBackAtAll: await readBackAtAll(client, p) };
    }
    {
      const p = await prepareForCluster(cluster, dir, rows, { EMBATCH_WEAVIATE__REPLICATION_FACTOR: '1', EMBATCH_WEAVIATE__SHARDS: '3', EMBATCH_WEAVIATE__REQUEST_RETRIES: '2' });
      const r = await indexDisrupted(p, client, [{ atCount: Math.floor(p.objects.length / 3), step: async () => (process.kill(cluster.pid(2), 'SIGKILL'), nodeDown(cluster, 2)) }]);
      await cluster.restart(2);
      const again = await runCli(['index', '--json', '--work-dir', p.work], { env: p.env });
      const count = (await client.collections.get(p.collection).aggregate.overAll()).totalCount;
      figures['rf1-kill'] = { objects: p.objects.length, exit: r.code, message: /Weaviate could not take[^\n]*/.exec(r.stderr)?.[0], rejects: rejectsWritten(p), rerunExit: again.code, resent: JSON.parse(again.stdout).acked, count, verify: await verifyCounts(p) };
    }
    {
      const p = await prepareForCluster(cluster, dir, rows, { EMBATCH_WEAVIATE__REPLICATION_FACTOR: '3', EMBATCH_WEAVIATE__REQUEST_RETRIES: '8' });
      const r = await indexDisrupted(
        p,
        client,
        [0, 1, 2].map((i) => ({ atCount: Math.floor(((i + 1) * p.objects.length) / 4), step: () => cluster.restart(i) })),
      );
      const count = (await client.collections.get(p.collection).aggregate.overAll()).totalCount;
      figures['rf3-rolling'] = { objects: p.objects.length, exit: r.code, rejects: rejectsWritten(p), count, verify: await verifyCounts(p) };
    }
    console.log(JSON.stringify(figures, null, 2));
  } finally {
    await client.close();
    await t.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await campaign(flag(process.argv.slice(2), '--rows', 3000));
