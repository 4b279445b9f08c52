/**
 * Shared parts of the reliability campaigns (RELIABILITY.md): a catalog fixture, the simulator and a Weaviate server,
 * the CLI run with a kill timer, and the checks that compare a run's end state with a clean one.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import weaviate, { type WeaviateClient } from 'weaviate-client';
import { writeCatalog } from '../../scripts/gen-catalog.js';
export { mulberry32 } from '../../scripts/gen-catalog.js';
import { startSimulator, type RunningSimulator, type SimulatorOptions } from '../../src/simulator/server.js';
import { StateStore } from '../../src/store.js';
import { CLI, ROOT } from '../helpers.js';
import type { WeaviateTarget } from '../weaviate-support.js';

export const API_KEY = 'sk-embatch-campaign-5e6f7a8b9c0d1e2f';

/** `--name <number>` from a campaign's command line, or the default. */
export function flag(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  return i === -1 ? dflt : Number(args[i + 1]);
}

export async function catalogFile(dir: string, rows: number): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `catalog-${rows}.csv`);
  const out = createWriteStream(file);
  await writeCatalog(out, rows);
  await new Promise<void>((r) => out.end(() => r()));
  return file;
}

export async function simulator(dir: string, options: Omit<SimulatorOptions, 'dir' | 'apiKey'> = {}): Promise<RunningSimulator> {
  return startSimulator({ dir, apiKey: API_KEY, ...options, engine: { validatingSeconds: 0.3, finalizingSeconds: 0.3, linesPerSecond: 5000, ...options.engine } });
}

/** The environment a campaign's CLI runs get: simulator, Weaviate, small vectors, fast polling. */
export function cliEnv(sim: RunningSimulator, w: WeaviateTarget | undefined, collection: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    OPENAI_BASE_URL: sim.baseURL,
    OPENAI_API_KEY: API_KEY,
    ...(w ? { WEAVIATE_URL: w.url, WEAVIATE_GRPC_PORT: String(w.grpcPort) } : {}),
    ...(w?.apiKey ? { WEAVIATE_API_KEY: w.apiKey } : {}),
    EMBATCH_WEAVIATE__COLLECTION: collection,
    EMBATCH_DIMENSIONS: '64',
    EMBATCH_MAX_REQUESTS_PER_FILE: '5000',
    EMBATCH_BATCH_POLL_INTERVAL: '0.5',
    EMBATCH_WEAVIATE__REQUEST_RETRIES: '2',
    ...extra,
  };
}

export interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed by the timer (SIGKILL) or by the hang guard. */
  killed: boolean;
  hung: boolean;
  ms: number;
}

/**
 * Runs the CLI; SIGKILLs it after `killAfterMs` or as soon as `killWhen` (polled every 20 ms) says so (a crash), or
 * after `hangMs` (counted as a hang).
 */
export function runCli(args: string[], opts: { env: Record<string, string>; killAfterMs?: number; killWhen?: () => boolean; hangMs?: number; input?: string | Buffer; holdStdinOpen?: boolean }): Promise<Outcome> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('EMBATCH_') && !k.startsWith('OPENAI_') && !k.startsWith('WEAVIATE_')) env[k] = v;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...env, ...opts.env }, cwd: ROOT });
    let stdout = '';
    let stderr = '';
    let killed = false;
    let hung = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.stdin.on('error', () => {});
    // Held open, the input never ends: a command reading it cannot finish, only be killed.
    if (opts.holdStdinOpen) child.stdin.write(opts.input ?? '');
    else child.stdin.end(opts.input ?? '');
    const kill = () => ((killed = true), child.kill('SIGKILL'));
    const timers = [
      opts.killAfterMs !== undefined ? setTimeout(kill, opts.killAfterMs) : undefined,
      setTimeout(() => ((hung = true), child.kill('SIGKILL')), opts.hangMs ?? 300_000),
    ];
    const watch = opts.killWhen ? setInterval(() => opts.killWhen!() && kill(), 20) : undefined;
    child.on('error', reject);
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      clearInterval(watch);
      resolve({ code, signal, stdout, stderr, killed: killed && signal === 'SIGKILL', hung, ms: Date.now() - started });
    });
  });
}

/** What a work directory is busy with: the earliest unfinished step of the pipeline. */
export async function stageOf(work: string): Promise<'prepare' | 'submit' | 'poll' | 'download' | 'index' | 'done'> {
  const store = await StateStore.open(work, { cacheMB: 8 });
  try {
    let prepared = false;
    for await (const [, run] of store.runs.iterator()) prepared ||= run.state === 'done';
    if (!prepared) return 'prepare';
    const states = new Set<string>();
    for await (const [, job] of store.requestFilesWithJobs()) states.add(job.state === 'downloaded' && !job.indexedTo?.length ? 'unindexed' : job.state);
    if (states.has('queued') || states.has('uploaded') || states.has('creating')) return 'submit';
    if (states.has('active')) return 'poll';
    if (states.has('ended')) return 'download';
    if (states.has('unindexed')) return 'index';
    return 'done';
  } finally {
    await store.close();
  }
}

export function connect(w: WeaviateTarget): Promise<WeaviateClient> {
  return weaviate.connectToLocal({ host: w.host, port: w.httpPort, grpcPort: w.grpcPort, ...(w.apiKey ? { authCredentials: new weaviate.ApiKey(w.apiKey) } : {}) });
}

/** Object id -> a digest of its properties and vector, streamed in id order (cursor pages of 1,000). */
async function* objectsOf(client: WeaviateClient, collection: string): AsyncGenerator<[string, string]> {
  const c = client.collections.get(collection);
  for (let after: string | undefined; ; ) {
    const page = await c.query.fetchObjects({ limit: 1000, includeVector: true, ...(after ? { after } : {}) });
    for (const o of page.objects) {
      const v = o.vectors.default as number[];
      const props = Object.entries(o.properties).sort(([a], [b]) => (a < b ? -1 : 1));
      yield [o.uuid, `${JSON.stringify(props)}|${v.map((x) => x.toFixed(6)).join(',')}`];
    }
    if (page.objects.length < 1000) return;
    after = page.objects.at(-1)!.uuid;
  }
}

/** Compares two collections object by object (both streamed in id order): lost, extra, and differing objects. */
export async function compareCollections(client: WeaviateClient, expected: string, actual: string): Promise<{ expected: number; actual: number; lost: number; extra: number; differing: number; samples: string[] }> {
  const a = objectsOf(client, expected);
  const b = objectsOf(client, actual);
  const r = { expected: 0, actual: 0, lost: 0, extra: 0, differing: 0, samples: [] as string[] };
  let x = await a.next();
  let y = await b.next();
  while (!x.done || !y.done) {
    if (!y.done && (x.done || y.value[0] < x.value[0])) {
      r.extra++;
      r.actual++;
      y = await b.next();
    } else if (!x.done && (y.done || x.value[0] < y.value[0])) {
      r.lost++;
      r.expected++;
      x = await a.next();
    } else {
      if (x.value![1] !== y.value![1] && r.differing++ < 3) r.samples.push(`${x.value![0]}: ${x.value![1].slice(0, 300)} <> ${y.value![1].slice(0, 300)}`);
      r.expected++;
      r.actual++;
      x = await a.next();
      y = await b.next();
    }
  }
  return r;
}

/** What the API was asked for: batches created per request file (by metadata), and strings asked for twice. */
export async function apiAccounting(sim: RunningSimulator): Promise<{ batches: number; duplicateBatches: number; extraRequests: number }> {
  const client = new OpenAI({ apiKey: API_KEY, baseURL: sim.baseURL });
  const perFile = new Map<string, number>();
  const ids = new Set<string>();
  let batches = 0;
  let lines = 0;
  let lostBatchLines = 0;
  for await (const b of client.batches.list({ limit: 100 })) {
    batches++;
    const key = `${b.metadata?.embatch_workdir}/${b.metadata?.embatch_seq}/${b.metadata?.embatch_sha256}`;
    perFile.set(key, (perFile.get(key) ?? 0) + 1);
    const text = await (await client.files.content(b.input_file_id)).text();
    let n = 0;
    for (const m of text.matchAll(/"custom_id":"([^"]+)"/g)) {
      n++;
      ids.add(m[1]!);
    }
    lines += n;
    // Lines of a batch that failed, expired or was cancelled without output were genuinely lost: asking again is right.
    if (b.status !== 'completed') lostBatchLines += n - (b.request_counts?.completed ?? 0);
  }
  let duplicateBatches = 0;
  for (const n of perFile.values()) duplicateBatches += n - 1;
  // A string asked for more than once, beyond the lines of batches that were genuinely lost.
  return { batches, duplicateBatches, extraRequests: lines - ids.size - lostBatchLines };
}

/** API requests the simulator has answered so far (every route). */
export function apiRequests(sim: RunningSimulator): number {
  let n = 0;
  for (const [k, v] of Object.entries(sim.stats)) if (/^(GET|POST|DELETE) /.test(k)) n += v;
  return n;
}
