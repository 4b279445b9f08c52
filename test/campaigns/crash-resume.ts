/**
 * Campaign 1, crash-resume: the whole pipeline (prepare, submit, poll, download, index into Weaviate) against the
 * simulator, SIGKILLed at random moments and rerun each time until done, compared with an uninterrupted run.
 *
 *   node dist/test/campaigns/crash-resume.js [--rows 25000] [--kills 50] [--seed 7]
 *
 * Needs a Weaviate server: WEAVIATE_URL, or one built and started for the run (see README, "Tests").
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from '../helpers.js';
import { weaviateForTests, type WeaviateTarget } from '../weaviate-support.js';
import { apiAccounting, apiRequests, catalogFile, cliEnv, compareCollections, connect, flag, mulberry32, runCli, simulator, stageOf } from './harness.js';

export interface CrashResumeOptions {
  rows: number;
  /** Kills to aim for; the campaign keeps killing with the same spread until at least this many. */
  kills: number;
  seed: number;
  dir: string;
  weaviate: WeaviateTarget;
  /**
   * Kills aimed at events instead of moments, so where they land does not depend on the machine's speed (the small
   * version in `npm test`): a prepare try reads the CSV from a pipe that never ends, so it is killed in prepare
   * whenever the kill comes; a run try is killed once it has made 1-6 more API requests, which a run makes only while
   * batches are to be submitted, followed or downloaded.
   */
  aimed?: boolean;
  log?: (line: string) => void;
}

export interface CrashResumeFigures {
  strings: number;
  objects: number;
  killPoints: number;
  killsByStage: Record<string, number>;
  reruns: number;
  objectsLost: number;
  objectsDuplicated: number;
  objectsDiffering: number;
  duplicateBatches: number;
  extraRequests: number;
  batchesClean: number;
  batchesCrashed: number;
  seconds: number;
}

export async function crashResume(o: CrashResumeOptions): Promise<CrashResumeFigures> {
  const started = Date.now();
  const log = o.log ?? (() => {});
  const rnd = mulberry32(o.seed);
  rmSync(o.dir, { recursive: true, force: true });
  const csv = await catalogFile(o.dir, o.rows);
  const collections = { clean: `CrashClean${o.seed}`, crashed: `CrashKilled${o.seed}` };
  const client = await connect(o.weaviate);
  for (const c of Object.values(collections)) await client.collections.delete(c).catch(() => {});
  const simClean = await simulator(path.join(o.dir, 'sim-clean'));
  const simCrash = await simulator(path.join(o.dir, 'sim-crash'));
  try {
    // The reference: one uninterrupted run.
    const cleanWork = path.join(o.dir, 'work-clean');
    const envClean = cliEnv(simClean, o.weaviate, collections.clean);
    const t0 = Date.now();
    const p = await runCli(['prepare', csv, '--work-dir', cleanWork, '--json'], { env: envClean });
    if (p.code !== 0) throw new Error(`clean prepare failed: ${p.stderr}`);
    const prepareMs = Date.now() - t0;
    const strings = JSON.parse(p.stdout).newStrings as number;
    const clean = await runCli(['run', '--wait', '--work-dir', cleanWork, '--json'], { env: envClean });
    if (clean.code !== 0) throw new Error(`clean run failed: ${clean.stderr}`);
    const runMs = Date.now() - t0 - prepareMs;
    log(`clean run: ${strings} strings, prepare ${prepareMs} ms, the rest ${runMs} ms`);

    // The same work, killed at random moments: first prepare (a fifth of the kills), then run.
    const work = path.join(o.dir, 'work-crashed');
    const env = cliEnv(simCrash, o.weaviate, collections.crashed);
    const killsByStage: Record<string, number> = {};
    let killPoints = 0;
    let reruns = 0;
    const resultsDir = path.join(work, 'results');
    const downloading = () => {
      try {
        return readdirSync(resultsDir).some((n) => n.endsWith('.partial'));
      } catch {
        return false;
      }
    };
    const csvBytes = o.aimed ? readFileSync(csv) : undefined;
    const attempt = async (args: string[], maxDelayMs: number, inDownload = false): Promise<boolean> => {
      const stage = inDownload ? 'download' : await stageOf(work).catch(() => 'prepare' as const);
      const delay = 50 + rnd() * maxDelayMs;
      const toKill = maxDelayMs < 600_000;
      let how: Parameters<typeof runCli>[1] = inDownload ? { env, killWhen: downloading, killAfterMs: 600_000 } : { env, killAfterMs: delay };
      if (o.aimed && toKill && args[0] === 'prepare') {
        // The same source name as the file's, so counts add up as for `prepare <csv>`.
        args = ['prepare', '-', '--source', csv];
        how = { env, input: csvBytes, holdStdinOpen: true, killAfterMs: delay };
      } else if (o.aimed && toKill && !inDownload) {
        const due = apiRequests(simCrash) + 1 + Math.floor(rnd() * 6);
        how = { env, killWhen: () => apiRequests(simCrash) >= due, killAfterMs: 600_000 };
      }
      // A download is over in well under a second here: to land kills in it, some tries die the moment one starts.
      const r = await runCli([...args, '--work-dir', work, '--json'], how);
      reruns++;
      if (r.killed) {
        killPoints++;
        killsByStage[stage] = (killsByStage[stage] ?? 0) + 1;
        return false;
      }
      if (r.code !== 0) throw new Error(`${args[0]} exited ${r.code} (not killed): ${r.stderr.slice(-2000)}`);
      return true;
    };
    const prepareKills = Math.ceil(o.kills / 5);
    for (let i = 0; i < prepareKills; i++) if (await attempt(['prepare', csv], 0.9 * prepareMs)) break;
    await attempt(['prepare', csv], 600_000);
    // Spread the rest over the run: each try lives for a random part of a window sized from the clean run, so kills
    // land all along it; a try that keeps dying at the same step gets longer to make progress. Every fourth try while
    // batches run or wait to be downloaded dies as soon as a download starts.
    const runKills = Math.max(o.kills - killPoints, 1);
    let window = Math.max(300, runMs / (3 * runKills));
    let downloadKills = 0;
    for (let stuck = 0, tries = 0; ; tries++) {
      const before = await stageOf(work);
      const aimAtDownload = killPoints < o.kills && downloadKills < Math.ceil(o.kills / 10) && (before === 'poll' || before === 'download') && tries % 4 === 3;
      if (aimAtDownload) downloadKills++;
      if (await attempt(['run', '--wait'], killPoints >= o.kills ? 600_000 : window, aimAtDownload)) break;
      if ((await stageOf(work)) === before) stuck++;
      else stuck = 0;
      if (stuck >= 4) {
        window *= 1.5;
        stuck = 0;
      }
    }
    log(`crashed run done after ${killPoints} kills and ${reruns} runs: ${JSON.stringify(killsByStage)}`);

    const cmp = await compareCollections(client, collections.clean, collections.crashed);
    for (const sample of cmp.samples) log(`differs: ${sample}`);
    const apiClean = await apiAccounting(simClean);
    const apiCrash = await apiAccounting(simCrash);
    return {
      strings,
      objects: cmp.expected,
      killPoints,
      killsByStage,
      reruns,
      objectsLost: cmp.lost,
      objectsDuplicated: cmp.extra,
      objectsDiffering: cmp.differing,
      duplicateBatches: apiCrash.duplicateBatches,
      extraRequests: apiCrash.extraRequests,
      batchesClean: apiClean.batches,
      batchesCrashed: apiCrash.batches,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await simClean.close();
    await simCrash.close();
    for (const c of Object.values(collections)) await client.collections.delete(c).catch(() => {});
    await client.close();
  }
}


if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const server = await weaviateForTests();
  if (server.target === undefined) throw new Error(server.skip);
  const target = server.target;
  try {
    const figures = await crashResume({
      rows: flag(args, '--rows', 25_000),
      kills: flag(args, '--kills', 50),
      seed: flag(args, '--seed', 7),
      dir: path.join(ROOT, '.tmp', 'campaign-crash'),
      weaviate: target,
      log: (l) => console.error(l),
    });
    console.log(JSON.stringify(figures, null, 2));
  } finally {
    await target.release();
  }
}
