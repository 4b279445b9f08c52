/**
 * Campaign 2, faults: the whole pipeline against a simulator injecting 429s, 500s, connection resets, stalled and
 * truncated downloads, failing lines, expiring batches and queue limits, at rates up to 20%, with the Weaviate server
 * stopped and restarted while indexing. Each run is rerun until done (as a user would); at the end every prepared
 * string must be embedded (acknowledged by Weaviate), skipped with a reason, or failed with a reason.
 *
 *   node dist/test/campaigns/faults.js [--rows 5000] [--rates 0.05,0.1,0.2] [--seed 3]
 *
 * Starts its own Weaviate server (it stops and restarts it).
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { start, stop } from '../../scripts/weaviate.js';
import { StateStore } from '../../src/store.js';
import { ROOT } from '../helpers.js';
import { weaviateForTests, type WeaviateTarget } from '../weaviate-support.js';
import OpenAI from 'openai';
import { API_KEY, catalogFile, cliEnv, connect, flag, runCli, simulator } from './harness.js';

export interface FaultRunFigures {
  rate: number;
  strings: number;
  faultsInjected: Record<string, number>;
  /** Batches by final status at the API: expired and failed ones are faults too. */
  batchStatuses: Record<string, number>;
  weaviateRestarts: number;
  attempts: number;
  completed: boolean;
  embedded: number;
  failedWithReason: number;
  skippedWithReason: number;
  lost: number;
  weaviateObjects: number;
  indexedMarks: number;
  seconds: number;
}

export async function faultRun(o: { rate: number; rows: number; seed: number; dir: string; weaviate: WeaviateTarget; restartWeaviate: boolean; log?: (l: string) => void }): Promise<FaultRunFigures> {
  const started = Date.now();
  const log = o.log ?? (() => {});
  const r = o.rate;
  rmSync(o.dir, { recursive: true, force: true });
  const csv = await catalogFile(o.dir, o.rows);
  const sim = await simulator(path.join(o.dir, 'sim'), {
    faults: { rate429: r / 2, rate500: r / 4, rateReset: r / 4, rateStall: r / 2, rateTruncate: r / 2, retryAfterSeconds: 0.2, seed: o.seed },
    engine: {
      lineServerErrorRate: r / 4,
      lineBadRequestRate: r / 20,
      // Batches of 2,000 lines at 1,000 lines/s: with a 1.5 s window some expire part-done at the higher rates.
      linesPerSecond: 1000,
      completionWindowSeconds: r >= 0.1 ? 1.5 : 86_400,
      // Room for 3 files at once: the rest fail on the queue limit and go back to the queue.
      enqueuedRequestLimit: 6000,
    },
  });
  const collection = `Faults${Math.round(r * 100)}x${o.seed}`;
  const env = cliEnv(sim, o.weaviate, collection, { EMBATCH_MAX_REQUESTS_PER_FILE: '2000', EMBATCH_DOWNLOAD_IDLE_TIMEOUT: '2', EMBATCH_MAX_RETRY_ATTEMPTS: '6' });
  const work = path.join(o.dir, 'work');
  const client = await connect(o.weaviate);
  await client.collections.delete(collection).catch(() => {});
  let weaviateRestarts = 0;
  let attempts = 0;
  let completed = false;
  try {
    const p = await runCli(['prepare', csv, '--work-dir', work, '--json'], { env });
    if (p.code !== 0) throw new Error(`prepare failed: ${p.stderr}`);
    const strings = JSON.parse(p.stdout).newStrings as number;
    for (; attempts < 30 && !completed; ) {
      attempts++;
      const running = runCli(['run', '--wait', '--work-dir', work, '--json'], { env, hangMs: 600_000 });
      if (o.restartWeaviate && o.weaviate.own && weaviateRestarts === 0) {
        // Once indexing has begun, the server goes away for a while and comes back.
        void (async () => {
          const watch = await connect(o.weaviate);
          for (;;) {
            await sleep(200);
            const n = await watch.collections.get(collection).aggregate.overAll().then((a) => a.totalCount, () => 0);
            if (n > 0) break;
          }
          await watch.close();
          weaviateRestarts++;
          await stop(o.weaviate.own!, () => {});
          await sleep(3000);
          await start(o.weaviate.own!, { log: () => {} });
        })();
      }
      const outcome = await running;
      // Done: nothing left to do. Strings the API refused for good (the 400 faults) make the exit code 1, rightly.
      completed = (outcome.code === 0 || outcome.code === 1) && JSON.parse(outcome.stdout || '{}').done === true;
      if (!completed) log(`rate ${r}: attempt ${attempts} ended with exit ${outcome.code}: ${outcome.stderr.trim().split('\n').at(-1)}`);
      // A rerun while the server is restarting would only fail again.
      for (let i = 0; i < 100 && !(await fetch(`${o.weaviate.url}/v1/.well-known/ready`).then((x) => x.ok, () => false)); i++) await sleep(300);
    }

    // Every string is in exactly one of: indexed, failed with a reason, skipped with a reason.
    const store = await StateStore.open(work, { cacheMB: 8 });
    const indexed = new Set<number>();
    const failed = new Set<number>();
    const skipped = new Set<number>();
    let indexedMarks = 0;
    try {
      for await (const key of store.indexed.keys()) {
        indexedMarks++;
        indexed.add(Number(key.split(':')[1])); // <target>:<id>:<field>
      }
      for await (const [id] of store.failureRecords()) if (!indexed.has(id)) failed.add(id);
      for await (const [id] of store.skipped()) skipped.add(id);
    } finally {
      await store.close();
    }
    const c = await connect(o.weaviate);
    const weaviateObjects = (await c.collections.get(collection).aggregate.overAll()).totalCount;
    await c.collections.delete(collection);
    await c.close();
    const accounted = indexed.size + failed.size + skipped.size;
    const batchStatuses: Record<string, number> = {};
    for await (const b of new OpenAI({ apiKey: API_KEY, baseURL: sim.baseURL }).batches.list({ limit: 100 })) batchStatuses[b.status] = (batchStatuses[b.status] ?? 0) + 1;
    return {
      rate: r,
      strings,
      faultsInjected: Object.fromEntries(Object.entries(sim.stats).filter(([k]) => k.startsWith('fault_'))),
      batchStatuses,
      weaviateRestarts,
      attempts,
      completed,
      embedded: indexed.size,
      failedWithReason: failed.size,
      skippedWithReason: skipped.size,
      lost: strings - accounted,
      weaviateObjects,
      indexedMarks,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await sim.close();
    await client.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--rates');
  const rates = (i === -1 ? '0.05,0.1,0.2' : args[i + 1]!).split(',').map(Number);
  const server = await weaviateForTests({ own: true });
  if (server.target === undefined) throw new Error(server.skip);
  const target = server.target;
  try {
    for (const rate of rates) {
      const f = await faultRun({ rate, rows: flag(args, '--rows', 5000), seed: flag(args, '--seed', 3), dir: path.join(ROOT, '.tmp', `campaign-faults-${rate}`), weaviate: target, restartWeaviate: true, log: (l) => console.error(l) });
      console.log(JSON.stringify(f));
    }
  } finally {
    await target.release();
  }
}
