/**
 * `embatch verify` at size: a catalog run through the simulator into a real Weaviate (8-dimensional vectors, so
 * building the collection is quick; verify reads no vectors), then verify on the whole collection, then 1,000
 * objects deleted and `verify --repair`. Prints objects, seconds, objects/s and peak RSS of each.
 *
 *   node dist/bench/verify.js [rows] [--more N] [--reuse]
 *
 * Default 450,000 rows (885,185 objects) and --more 70,000 rows of new strings run into the same collection after
 * them: about 1M objects. --reuse keeps the server's data and the work directory of an earlier run of the same size
 * (the build takes ~20 minutes here) and goes straight to the verify steps.
 *
 * Uses WEAVIATE_URL / WEAVIATE_GRPC_PORT when set; otherwise starts a server of its own on port 8097.
 */
import { execFileSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import weaviate from 'weaviate-client';
import { defaultOptions, start, stop, type ServerOptions } from '../scripts/weaviate.js';
import { CATALOG_HEADER, writeCatalog } from '../scripts/gen-catalog.js';
import { CLI, ROOT } from './make-results.js';

const args = process.argv.slice(2);
const rows = Number(args.find((a, i) => /^\d+$/.test(a) && args[i - 1] !== '--more') ?? 450_000);
const more = args.includes('--more') ? Number(args[args.indexOf('--more') + 1]) : 70_000;
const reuse = args.includes('--reuse');
const dir = path.join(ROOT, '.tmp', 'bench-verify');
mkdirSync(dir, { recursive: true });

let own: ServerOptions | undefined;
let url = process.env.WEAVIATE_URL;
let grpcPort = Number(process.env.WEAVIATE_GRPC_PORT ?? 50051);
if (!url) {
  own = { ...defaultOptions(), httpPort: 8097, grpcPort: 50097, dir: path.join(dir, 'server'), memoryLimit: '8GiB' };
  await start(own, { fresh: !reuse });
  url = `http://127.0.0.1:${own.httpPort}`;
  grpcPort = own.grpcPort;
}

try {
  const catalog = async (name: string, n: number, offset: number) => {
    const csv = path.join(dir, name);
    if (!existsSync(csv)) {
      const out = createWriteStream(csv);
      // Rows from an offset come without the header line (they are meant to be appended): it goes first here.
      if (offset) out.write(CATALOG_HEADER + '\n');
      await writeCatalog(out, n, undefined, offset);
      await new Promise<void>((r) => out.end(() => r()));
    }
    return csv;
  };
  const csv = await catalog(`catalog-${rows}.csv`, rows, 0);
  const extra = await catalog(`catalog-${more}-from-${rows}.csv`, more, rows);
  const work = path.join(dir, `work-${rows}`);
  if (!reuse) rmSync(work, { recursive: true, force: true });
  const collection = `BenchVerify${rows}`;
  const env = {
    ...process.env,
    WEAVIATE_URL: url,
    WEAVIATE_GRPC_PORT: String(grpcPort),
    EMBATCH_WEAVIATE__COLLECTION: collection,
    EMBATCH_DIMENSIONS: '8',
    EMBATCH_BATCH_POLL_INTERVAL: '0.5',
    EMBATCH_SIMULATOR__VALIDATING_SECONDS: '0.1',
    EMBATCH_SIMULATOR__FINALIZING_SECONDS: '0.1',
    EMBATCH_SIMULATOR__LINES_PER_SECOND: '200000',
    EMBATCH_MAX_ACTIVE_BATCHES: '100',
    EMBATCH_ENQUEUED_TOKEN_BUDGET: '100000000000',
  };
  const cli = (args: string[], okCodes = [0]) => {
    const started = performance.now();
    try {
      const out = execFileSync(process.execPath, [CLI, ...args, '--work-dir', work, '--json', '--config', path.join(ROOT, 'config.yml')], { env, encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] });
      return { r: JSON.parse(out), seconds: (performance.now() - started) / 1000 };
    } catch (err) {
      const e = err as { status?: number; stdout?: string };
      if (e.status !== undefined && okCodes.includes(e.status)) return { r: JSON.parse(e.stdout ?? '{}'), seconds: (performance.now() - started) / 1000 };
      throw err;
    }
  };
  if (!reuse) {
    const run = cli(['run', csv, '--simulate', '--wait']);
    console.log(`build      ${rows.toLocaleString('en-US')} rows -> ${run.r.status.strings.total.toLocaleString('en-US')} strings, ${run.r.status.objects.indexed.toLocaleString('en-US')} objects indexed in ${run.seconds.toFixed(0)} s`);
  }
  if (!reuse) {
    const run = cli(['run', extra, '--simulate', '--wait']);
    console.log(`build      + ${more.toLocaleString('en-US')} rows -> ${run.r.status.strings.total.toLocaleString('en-US')} strings, ${run.r.status.objects.indexed.toLocaleString('en-US')} objects indexed in ${run.seconds.toFixed(0)} s`);
  }

  // Exit 1 when objects are missing or differ (a reused collection may hold such): the figures are the point here.
  const whole = cli(['verify'], [0, 1]);
  const v = whole.r;
  console.log(`verify     ${v.objects.toLocaleString('en-US')} objects in ${v.elapsedSeconds.toFixed(1)} s (${Math.round(v.objects / v.elapsedSeconds).toLocaleString('en-US')} objects/s), peak RSS ${v.peakRssMB.toFixed(0)} MB; matching ${v.matching}, missing ${v.missing}, differs ${v.differs}, unrecorded ${v.unrecorded}, extra ${v.extra}`);

  const client = await weaviate.connectToLocal({ host: '127.0.0.1', port: Number(new URL(url).port), grpcPort });
  try {
    const c = client.collections.get(collection);
    const victims = (await c.query.fetchObjects({ limit: 1000 })).objects.map((o) => o.uuid);
    await c.data.deleteMany(c.filter.byId().containsAny(victims));
  } finally {
    await client.close();
  }
  const found = cli(['verify'], [1]).r;
  const repair = cli(['verify', '--repair'], [0, 1]).r;
  console.log(`damaged    1,000 objects deleted: verify found ${found.missing} missing in ${found.elapsedSeconds.toFixed(1)} s; --repair sent ${repair.repaired.resent} again (${repair.repaired.index?.acked ?? 0} acknowledged, ${repair.repaired.index?.files ?? 0} result files read) in ${repair.elapsedSeconds.toFixed(1)} s, peak RSS ${repair.peakRssMB.toFixed(0)} MB`);
  const after = cli(['verify'], [0, 1]).r;
  console.log(`after      matching ${after.matching}, missing ${after.missing}, differs ${after.differs}`);
} finally {
  if (own) await stop(own);
}
