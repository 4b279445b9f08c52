/**
 * Weaviate benchmark: the same result file into the same real Weaviate server through `embatch replay` (the library,
 * in a child process) and through the official Python client v4 in its batching modes, each timing its whole job
 * (reading the result file, decoding base64, looking texts up, adding objects). Reports objects/s, CPU-seconds per
 * 1,000 objects for the client and for the server, and the ratio to the best Python mode, per server.
 *
 *   node dist/bench/weaviate.js [--lines 20000] [--sync-lines 4000] [--rounds 2] [--servers async,sync]
 *        [--python fixed:100x2,...,dynamic,stream] [--embatch 200x4,...]
 *
 * Servers: a fresh Weaviate 1.39.2 each from the project's script on port 8099, one with ASYNC_INDEXING=true (async)
 * and one building its HNSW graph on insert (sync); or WEAVIATE_URL / WEAVIATE_GRPC_PORT (server CPU then unknown).
 * Modes run interleaved: every mode once per round, in an order rotated each round; each into a new collection,
 * deleted afterwards (so no run competes with the previous one's background indexing). The Python client comes from
 * .tmp/pyenv (created with pip install weaviate-client numpy when missing). Every collection is made before the
 * client's clock starts. (The TypeScript client's own server-side batching is not among the peers: in weaviate-client
 * 3.14 it hangs for good once `batchSize` objects are in flight while the producer still adds, see BENCHMARKS.md.)
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import CRC32 from 'crc-32';
import { crcHex } from '../transforms/format-requests.js';
import { loadConfig } from '../src/config.js';
import { connectWeaviate, ensureCollection } from '../src/weaviate.js';
import { cpuSeconds, defaultOptions, start, stop, type ServerOptions } from '../scripts/weaviate.js';
import { benchWorkDir, CLI, makeResultFile, ROOT } from './make-results.js';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : fallback;
};
const PY_SWEEP = ['fixed:100x2', 'fixed:200x2', 'fixed:200x4', 'fixed:500x4', 'fixed:500x8', 'fixed:1000x4', 'fixed:1000x8', 'dynamic', 'stream'];
const EMBATCH_SWEEP = ['200x4', '500x4', '500x8', '1000x8'];
const lines = Number(opt('lines', '20000'));
const syncLines = Number(opt('sync-lines', '4000'));
const rounds = Number(opt('rounds', '2'));
const servers = opt('servers', 'async,sync').split(',') as Array<'async' | 'sync'>;
const pythonModes = opt('python', PY_SWEEP.join(',')).split(',');
const embatchModes = opt('embatch', EMBATCH_SWEEP.join(',')).split(',');
const defaults = loadConfig({ configPath: path.join(ROOT, 'config.yml'), env: {} }).config.weaviate;
const DEFAULT = `${defaults.batch_size}x${defaults.concurrency}`;
if (!embatchModes.includes(DEFAULT)) embatchModes.unshift(DEFAULT);

const dir = path.join(ROOT, '.tmp', 'bench-weaviate');
const py = path.join(ROOT, '.tmp', 'pyenv', 'bin', 'python');
if (!existsSync(py)) execFileSync('python3', ['-m', 'venv', path.join(ROOT, '.tmp', 'pyenv')], { stdio: 'inherit' });
try {
  execFileSync(py, ['-c', 'import weaviate, numpy'], { stdio: 'ignore' });
} catch {
  execFileSync(path.join(ROOT, '.tmp', 'pyenv', 'bin', 'pip'), ['install', '-q', 'weaviate-client', 'numpy'], { stdio: 'inherit' });
}
const pythonVersion = execFileSync(py, ['-c', 'import weaviate; print(weaviate.__version__)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();

/** A result file of `n` lines and, beside it, what each line's objects are without their vectors (for Python). */
async function data(n: number) {
  const work = await benchWorkDir(dir, n);
  const results = path.join(dir, `results-${n}.jsonl`);
  const texts = path.join(dir, `texts-${n}.jsonl`);
  if (existsSync(texts)) return { work, results, texts };
  if (!existsSync(results)) await makeResultFile(work, results, n, 'base64', 1536, 'shuffled');
  const objects = path.join(dir, `objects-${n}.jsonl`);
  execFileSync(process.execPath, [CLI, 'replay', results, '--sink', `jsonl:${objects}`, '--work-dir', work, '--quiet', '--config', path.join(ROOT, 'config.yml')]);
  // The sink writes each line's objects together, in the file's order; a line's objects share its string.
  const objectLines = createInterface({ input: createReadStream(objects) })[Symbol.asyncIterator]();
  const out = createWriteStream(texts);
  let next = await objectLines.next();
  for await (const line of createInterface({ input: createReadStream(results) })) {
    const customId = /"custom_id":"([^"]+)"/.exec(line)![1]!;
    const crc = customId.slice(0, 8);
    const group: Array<{ uuid: string; properties: { original_string: string } }> = [];
    while (!next.done) {
      const o = JSON.parse(next.value) as { uuid: string; properties: { original_string: string }; vector: unknown };
      const same = group.length ? o.properties.original_string === group[0]!.properties.original_string : crcHex(CRC32.str(o.properties.original_string)) === crc;
      if (!same) break;
      group.push({ uuid: o.uuid, properties: o.properties });
      next = await objectLines.next();
    }
    if (!group.length) throw new Error(`no objects for ${customId}`);
    out.write(`${JSON.stringify({ custom_id: customId, objects: group })}\n`);
  }
  if (!next.done) throw new Error('objects left over: the sink file and the result file do not pair up');
  await new Promise<void>((r) => out.end(() => r()));
  rmSync(objects);
  return { work, results, texts };
}

interface Run {
  client: 'python' | 'embatch';
  mode: string;
  objects: number;
  seconds: number;
  clientCpu: number;
  serverCpu: number | undefined;
}

const configFor = (url: string, grpcPort: number, collection: string) => loadConfig({ configPath: path.join(ROOT, 'config.yml'), env: {}, flags: { weaviate: { url, grpc_port: grpcPort, collection } } }).config;

async function runOnce(kind: string, round: number, client: Run['client'], mode: string, d: Awaited<ReturnType<typeof data>>, url: string, grpcPort: number, serverPid: number | undefined, seq: number): Promise<Run> {
  const collection = `Bench${client === 'python' ? 'Py' : 'Embatch'}${seq}`;
  const config = configFor(url, grpcPort, collection);
  if (client === 'embatch') {
    // Made before the clock starts, as the Python side makes its own before its clock.
    const c = await connectWeaviate(config);
    await ensureCollection(c, config, null);
    await c.close();
  }
  const u = new URL(url);
  const env = { ...process.env, WEAVIATE_URL: url, WEAVIATE_GRPC_PORT: String(grpcPort) };
  const before = serverPid ? cpuSeconds(serverPid) : undefined;
  const out =
    client === 'python'
      ? execFileSync(py, [path.join(ROOT, 'bench', 'weaviate_python.py'), d.texts, d.results, collection, mode, u.hostname, u.port || '80', String(grpcPort)], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'ignore'] })
      : execFileSync(process.execPath, [path.join(ROOT, 'dist', 'bench', 'weaviate-embatch.js'), d.work, d.results, collection, mode], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'inherit'] });
  const after = serverPid ? cpuSeconds(serverPid) : undefined;
  const r = JSON.parse(out.trim().split('\n').pop()!) as { objects: number; seconds: number; cpu_seconds: number; failed: number };
  // A new connection: the server closes idle kept-alive ones during a long client run.
  const c = await connectWeaviate(config);
  const held = (await c.collections.get(collection).aggregate.overAll()).totalCount;
  await c.collections.delete(collection);
  await c.close();
  if (r.failed || held !== r.objects) throw new Error(`${client} ${mode} on ${kind}: ${r.failed} failed, ${held} of ${r.objects} objects in the collection`);
  const run = { client, mode, objects: r.objects, seconds: r.seconds, clientCpu: r.cpu_seconds, serverCpu: before !== undefined && after !== undefined ? after - before : undefined };
  console.log(`${kind} round ${round} ${client} ${mode}: ${Math.round(run.objects / run.seconds)} objects/s, client ${((1000 * run.clientCpu) / run.objects).toFixed(3)} CPU-s/1k, server ${run.serverCpu === undefined ? '-' : ((1000 * run.serverCpu) / run.objects).toFixed(3)} CPU-s/1k`);
  return run;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const report: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, python: pythonVersion, lines, syncLines, rounds, servers: {} };
const modes: Array<[Run['client'], string]> = [
  ...pythonModes.map((m): [Run['client'], string] => ['python', m]),
  ...embatchModes.map((m): [Run['client'], string] => ['embatch', m]),
];
let seq = 0;
for (const kind of process.env.WEAVIATE_URL ? (['external'] as const) : servers) {
  const n = kind === 'sync' ? syncLines : lines;
  const d = await data(n);
  let own: ServerOptions | undefined;
  let url = process.env.WEAVIATE_URL;
  let grpcPort = Number(process.env.WEAVIATE_GRPC_PORT ?? 50051);
  let serverPid: number | undefined;
  if (!url) {
    own = { ...defaultOptions(), httpPort: 8099, grpcPort: 50099, dir: path.join(dir, `server-${kind}`), memoryLimit: '8GiB', asyncIndexing: kind === 'async' };
    serverPid = (await start(own, { fresh: true })).pid;
    url = `http://127.0.0.1:${own.httpPort}`;
    grpcPort = own.grpcPort;
  }
  const runs: Run[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      const order = modes.map((_, i) => modes[(i + round * 3) % modes.length]!);
      for (const [client, mode] of order) runs.push(await runOnce(kind, round + 1, client, mode, d, url, grpcPort, serverPid, ++seq));
    }
  } finally {
    if (own) await stop(own);
  }
  const rows = modes.map(([client, mode]) => {
    const mine = runs.filter((r) => r.client === client && r.mode === mode);
    const rates = mine.map((r) => r.objects / r.seconds);
    return {
      client,
      mode,
      rate: median(rates),
      min: Math.min(...rates),
      max: Math.max(...rates),
      clientCpuPer1k: median(mine.map((r) => (1000 * r.clientCpu) / r.objects)),
      serverCpuPer1k: mine.every((r) => r.serverCpu !== undefined) ? median(mine.map((r) => (1000 * r.serverCpu!) / r.objects)) : undefined,
      objects: mine[0]!.objects,
    };
  });
  const best = rows.filter((r) => r.client === 'python').reduce((a, b) => (b.rate > a.rate ? b : a));
  console.log(`\n${kind} server: ${n.toLocaleString('en-US')} result lines (shuffled), ${rows[0]!.objects.toLocaleString('en-US')} objects of 1,536 dimensions, ${rounds} round(s); Python weaviate-client ${pythonVersion}`);
  console.log(`| client | mode | objects/s (median) | min-max | client CPU-s / 1k objects | server CPU-s / 1k objects | vs best Python (${best.mode}) |`);
  console.log('|---|---|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const label = r.client === 'embatch' ? `${r.mode.replace('x', ' x ')}${r.mode === DEFAULT ? ' (default)' : ''}` : r.mode;
    console.log(`| ${r.client} | ${label} | ${Math.round(r.rate)} | ${Math.round(r.min)}-${Math.round(r.max)} | ${r.clientCpuPer1k.toFixed(3)} | ${r.serverCpuPer1k?.toFixed(3) ?? '-'} | ${((100 * r.rate) / best.rate).toFixed(0)}% |`);
  }
  const defaults = rows.find((r) => r.client === 'embatch' && r.mode === DEFAULT)!;
  console.log(`embatch's defaults (${DEFAULT}) at ${(defaults.rate / best.rate).toFixed(2)}x the best Python mode (${best.mode}); runs ${(defaults.min / best.max).toFixed(2)}-${(defaults.max / best.min).toFixed(2)}x\n`);
  (report.servers as Record<string, unknown>)[kind] = { lines: n, rows, runs };
}
mkdirSync(dir, { recursive: true });
const file = path.join(dir, `report-${Date.now()}.json`);
writeFileSync(file, JSON.stringify(report, null, 2));
console.log(`runs: ${file}`);
