/**
 * Vector compression measured (issue 19): the same collection built with none, RQ (8 and 1 bit), PQ and BQ, at 1,536
 * and 512 dimensions, each in a fresh single-node Weaviate started by the project's script, written through embatch's
 * own Weaviate stage (`upsertWeaviate`, embatch's default batch settings). For each it prints:
 *   - import rate: objects acknowledged per second, and objects per second until the vector index has taken them all
 *     (the server's indexing queue empty: with ASYNC_INDEXING the acknowledgement comes first);
 *   - server memory: Go's live heap after a forced collection (pprof's heap endpoint with gc=1, so garbage the
 *     collector has not reclaimed yet does not count), before the import, after it, and after a restart plus the
 *     queries (what a node holds in steady state); the process's peak resident set; the data directory on disk;
 *   - recall@10 of `embatch query`-style searches (nearVector, limit 10, the configured ef and rescoring) against the
 *     exact nearest neighbours by cosine computed here, and the query latency.
 *
 *   node dist/bench/compression.js [objects] [--queries N] [--configs 1536:none,1536:rq8,...] [--data easy|hard] [--sync]
 *
 * Its server listens on 8095 (gRPC 50095, pprof 6095); BENCH_WEAVIATE_PORT moves all three.
 *
 * Default 100,000 objects, 200 queries, configs 1536:none,1536:rq8,1536:rq1,1536:pq,1536:bq,512:none,512:rq8, a server
 * with ASYNC_INDEXING=true (--sync: without). The vectors are synthetic but shaped like text embeddings (a shared
 * direction, 256 topic clusters, a 32-dimension local structure and noise; random pairs at cosine ~0.2, neighbours at
 * ~0.7-0.8), generated from their index so nothing holds them all; uniform random vectors would make every quantizer
 * look worse than on real data. PQ trains on the first 25,000 objects (its default, 100,000, would leave a
 * 100,000-object collection uncompressed until the last one).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { configSchema, type Config } from '../src/config.js';
import weaviate, { type Collection } from 'weaviate-client';
import { connectWeaviate, ensureCollection, type EntityProperties } from '../src/weaviate.js';
import { openObjectWriter } from '../src/weaviate-writer.js';
import type { EntityObject } from '../transforms/build-objects.js';
import { newUpsertCounters, upsertWeaviate } from '../transforms/upsert-weaviate.js';
import { defaultOptions, rssMB, start, stop, type ServerOptions } from '../scripts/weaviate.js';
import { mulberry32 } from '../scripts/gen-catalog.js';
import { ROOT } from './make-results.js';

const args = process.argv.slice(2);
const flag = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const objects = Number(args.find((a, i) => /^\d+$/.test(a) && !args[i - 1]?.startsWith('--')) ?? 100_000);
const queries = Number(flag('--queries') ?? 200);
const asyncIndexing = !args.includes('--sync');
const configs = (flag('--configs') ?? '1536:none,1536:rq8,1536:rq1,1536:pq,1536:bq,512:none,512:rq8').split(',').map((c) => {
  const [dims, kind] = c.split(':') as [string, string];
  return { dims: Number(dims), kind };
});
const K = 10;
const dir = path.join(ROOT, '.tmp', 'bench-compression');
mkdirSync(dir, { recursive: true });

/** Vectors shaped like text embeddings, each computed from its index alone (see the header). */
/** Data sets: `easy` (HNSW finds every true neighbour at 100k) and `hard` (a 128-dimension local structure, more noise). */
const DATA_SHAPES: Record<string, { rank: number; noise: number }> = { easy: { rank: 32, noise: 0.35 }, hard: { rank: 128, noise: 0.5 } };
const data = flag('--data') ?? 'easy';
if (!DATA_SHAPES[data]) throw new Error(`--data takes ${Object.keys(DATA_SHAPES).join(' or ')}`);

class EmbeddingLike {
  private readonly mean: Float32Array;
  private readonly centers: Float32Array[];
  private readonly basis: Float32Array[];
  constructor(
    readonly dims: number,
    /** The rank of the local structure and the isotropic noise: `hard` spreads neighbours over more dimensions. */
    readonly shape: { rank: number; noise: number } = DATA_SHAPES.easy!,
    readonly seed = 7,
  ) {
    const rnd = mulberry32(seed);
    const gaussian = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
    const unit = () => normalize(Float32Array.from({ length: dims }, gaussian));
    this.mean = unit();
    this.centers = Array.from({ length: 256 }, unit);
    this.basis = Array.from({ length: shape.rank }, () => Float32Array.from({ length: dims }, () => gaussian() / Math.sqrt(dims * shape.rank)));
  }
  vector(i: number): Float32Array {
    const rnd = mulberry32((Math.imul(i + 1, 0x9e3779b1) ^ this.seed) >>> 0);
    const gaussian = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
    const center = this.centers[Math.floor(rnd() * this.centers.length)]!;
    const v = new Float32Array(this.dims);
    const noise = this.shape.noise / Math.sqrt(this.dims);
    for (let d = 0; d < this.dims; d++) v[d] = 0.45 * this.mean[d]! + 0.55 * center[d]! + noise * gaussian();
    for (const b of this.basis) {
      const z = 0.6 * gaussian();
      for (let d = 0; d < this.dims; d++) v[d]! += z * b[d]!;
    }
    return normalize(v);
  }
}

function normalize(v: Float32Array): Float32Array {
  let n = 0;
  for (let d = 0; d < v.length; d++) n += v[d]! * v[d]!;
  n = Math.sqrt(n);
  for (let d = 0; d < v.length; d++) v[d]! /= n;
  return v;
}

const uuidOf = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
const indexOf = (uuid: string) => parseInt(uuid.slice(24), 16);

/** The exact K nearest objects (by cosine) of each query vector: one pass over the objects, cached on disk. */
function exactNeighbours(gen: EmbeddingLike): number[][] {
  const file = path.join(dir, `exact-${data}-${gen.dims}-${objects}-${queries}.json`);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as number[][];
  const started = Date.now();
  const qs = Array.from({ length: queries }, (_, q) => gen.vector(objects + q));
  const best = qs.map(() => ({ ids: new Int32Array(K).fill(-1), sims: new Float64Array(K).fill(-Infinity) }));
  for (let i = 0; i < objects; i++) {
    const v = gen.vector(i);
    for (let q = 0; q < queries; q++) {
      const qv = qs[q]!;
      let s = 0;
      for (let d = 0; d < v.length; d++) s += v[d]! * qv[d]!;
      const b = best[q]!;
      if (s <= b.sims[K - 1]!) continue;
      let j = K - 1;
      for (; j > 0 && b.sims[j - 1]! < s; j--) {
        b.sims[j] = b.sims[j - 1]!;
        b.ids[j] = b.ids[j - 1]!;
      }
      b.sims[j] = s;
      b.ids[j] = i;
    }
  }
  const out = best.map((b) => Array.from(b.ids));
  writeFileSync(file, JSON.stringify(out));
  console.error(`exact neighbours of ${queries} queries over ${objects.toLocaleString('en-US')} ${gen.dims}-d vectors: ${((Date.now() - started) / 1000).toFixed(0)} s; top-1 cosine ${best[0]!.sims[0]!.toFixed(3)}, 10th ${best[0]!.sims[K - 1]!.toFixed(3)}`);
  return out;
}

function compression(kind: string): Config['weaviate']['compression'] {
  const base = configSchema.parse({}).weaviate.compression;
  switch (kind) {
    case 'none':
      return { ...base, type: 'none' };
    case 'rq8':
      return { ...base, type: 'rq', bits: 8 };
    case 'rq1':
      return { ...base, type: 'rq', bits: 1 };
    case 'pq':
      return { ...base, type: 'pq', training_limit: 25_000 };
    case 'bq':
      return { ...base, type: 'bq' };
    default:
      throw new Error(`unknown compression ${kind} (none, rq8, rq1, pq, bq)`);
  }
}

interface ShardInfo {
  class: string;
  objectCount: number;
  vectorQueueLength?: number;
  vectorIndexingStatus?: string;
  compressed?: boolean;
}

async function shards(url: string, collection: string): Promise<ShardInfo[]> {
  const res = await fetch(`${url}/v1/nodes?output=verbose&collection=${collection}`);
  const body = (await res.json()) as { nodes: Array<{ shards?: ShardInfo[] | null }> };
  return body.nodes.flatMap((n) => n.shards ?? []).filter((s) => s.class === collection);
}

function directoryBytes(p: string): number {
  let total = 0;
  for (const entry of readdirSync(p, { withFileTypes: true })) {
    const full = path.join(p, entry.name);
    total += entry.isDirectory() ? directoryBytes(full) : statSync(full).size;
  }
  return total;
}

/** The server's live heap in MB: HeapAlloc right after a collection pprof forces (gc=1). */
async function liveHeapMB(profilingPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${profilingPort}/debug/pprof/heap?debug=1&gc=1`)).text();
  const m = /# HeapAlloc = (\d+)/.exec(text);
  if (!m) throw new Error('no HeapAlloc in the heap profile');
  return Number(m[1]) / 1048576;
}

/** The live heap once it has stopped moving (a restarted server loads its index and caches in the background). */
async function settledHeap(profilingPort: number): Promise<number> {
  let last = await liveHeapMB(profilingPort);
  let still = 0;
  for (let i = 0; i < 60 && still < 2; i++) {
    await sleep(2000);
    const now = await liveHeapMB(profilingPort);
    still = Math.abs(now - last) <= 0.02 * last ? still + 1 : 0;
    last = now;
  }
  return last;
}


interface Row {
  config: string;
  ackedPerSecond: number;
  indexedPerSecond: number;
  heapBefore: number;
  heapImported: number;
  heapSteady: number;
  rssPeak: number;
  diskMB: number;
  compressed: boolean;
  recall: number;
  queryMsP50: number;
  queryMsP95: number;
  rescored: Array<{ rescoreLimit: number; recall: number; queryMsP50: number; queryMsP95: number }>;
}

/** recall@K of the queries against the exact neighbours, and the latency of each search (p50, p95). */
async function searches(collection: Collection<EntityProperties>, gen: EmbeddingLike, exact: number[][]): Promise<{ recall: number; queryMsP50: number; queryMsP95: number }> {
  let hits = 0;
  const ms: number[] = [];
  for (let q = 0; q < queries; q++) {
    const t = performance.now();
    const result = await collection.query.nearVector(Array.from(gen.vector(objects + q)), { limit: K, targetVector: 'default', returnProperties: [] });
    ms.push(performance.now() - t);
    const truth = new Set(exact[q]);
    for (const o of result.objects) if (truth.has(indexOf(o.uuid))) hits++;
  }
  ms.sort((a, b) => a - b);
  return { recall: hits / (queries * K), queryMsP50: ms[Math.floor(ms.length / 2)]!, queryMsP95: ms[Math.floor(ms.length * 0.95)]! };
}

async function measure(dims: number, kind: string, exact: number[][], gen: EmbeddingLike): Promise<Row> {
  const port = Number(process.env.BENCH_WEAVIATE_PORT ?? 8095);
  const server: ServerOptions = { ...defaultOptions(), httpPort: port, grpcPort: port + 42_000, dir: path.join(dir, `server-${port}`), memoryLimit: '16GiB', asyncIndexing, profilingPort: port - 2000,
    // The indexing queue waits up to a minute for a chunk to fill before it indexes a partial one: the tail of an
    // import would count that wait as indexing time.
    env: { ASYNC_INDEXING_STALE_TIMEOUT: '1s' } };
  const profilingPort = server.profilingPort!;
  const url = `http://127.0.0.1:${server.httpPort}`;
  const collection = `Bench${kind[0]!.toUpperCase()}${kind.slice(1)}${dims}`;
  const config = configSchema.parse({ weaviate: { url, grpc_port: server.grpcPort, collection } });
  config.weaviate.compression = compression(kind);
  let started = await start(server, { fresh: true, log: () => {} });
  let client = await connectWeaviate(config);
  try {
    const target = await ensureCollection(client, config, dims);
    const writer = await openObjectWriter(config);
    const heapBefore = await liveHeapMB(profilingPort);
    const counters = newUpsertCounters();
    const t0 = performance.now();
    await pipeline(
      Readable.from(
        (function* () {
          // The stage takes objects in groups (as batchItems gives them).
          for (let i = 0; i < objects; i += 100) {
            const group: EntityObject[] = [];
            for (let j = i; j < Math.min(i + 100, objects); j++)
              group.push({ uuid: uuidOf(j), properties: { original_string: `string ${j}`, hash_value: j.toString(16).padStart(32, '0'), field_type: 'bench', frequency: 1 }, vector: gen.vector(j), stringId: j, field: 'bench' });
            yield group;
          }
        })(),
        { highWaterMark: 4 },
      ),
      upsertWeaviate({
        writer,
        batchSize: config.weaviate.batch_size,
        maxBatchBytes: config.weaviate.max_batch_bytes,
        concurrency: config.weaviate.concurrency,
        maxObjectRetries: config.weaviate.max_object_retries,
        requestRetries: config.weaviate.request_retries,
        onAcked: async () => {},
        onRejected: async (r) => {
          throw new Error(`Weaviate refused ${r.length} object(s): ${r[0]?.message}`);
        },
        counters,
      }),
    );
    const acked = (performance.now() - t0) / 1000;
    writer.close();
    // Indexed: every object counted (an aggregate: /v1/nodes' objectCount is refreshed only now and then) and the
    // shards' vector queues empty.
    if ((await target.aggregate.overAll()).totalCount !== objects) throw new Error(`the collection does not hold ${objects} objects`);
    let info = await shards(url, collection);
    while (!(info.length && info.every((s) => (s.vectorQueueLength ?? 0) === 0 && (s.vectorIndexingStatus ?? 'READY') === 'READY'))) {
      await sleep(250);
      info = await shards(url, collection);
    }
    const indexed = (performance.now() - t0) / 1000;
    const rssPeak = rssMB(started.pid, true) ?? 0;
    const heapImported = await liveHeapMB(profilingPort);
    const compressed = info.every((s) => s.compressed === true);
    await client.close();
    await stop(server, () => {});
    const diskMB = directoryBytes(path.join(server.dir, `data-${server.httpPort}`)) / 1048576;

    started = await start(server, { log: () => {} });
    client = await connectWeaviate(config);
    const reopened = await ensureCollection(client, config, dims);
    await settledHeap(profilingPort);
    const searched = await searches(reopened, gen, exact);
    const heapSteady = await settledHeap(profilingPort);
    // RQ and BQ read candidates back at full precision to rescore them (rescore_limit, 1,000 by default here): the
    // same searches with fewer, to show what that buys.
    const rescored: Row['rescored'] = [];
    if (kind.startsWith('rq') || kind === 'bq')
      for (const limit of [100, 10]) {
        const q = weaviate.reconfigure.vectorIndex.quantizer;
        await reopened.config.update({ vectorizers: [weaviate.reconfigure.vectors.update({ name: 'default', vectorIndexConfig: weaviate.reconfigure.vectorIndex.hnsw({ quantizer: kind === 'bq' ? q.bq({ rescoreLimit: limit }) : q.rq({ rescoreLimit: limit }) }) })] });
        rescored.push({ rescoreLimit: limit, ...(await searches(reopened, gen, exact)) });
      }
    return {
      config: `${dims}-d ${kind}`,
      ackedPerSecond: objects / acked,
      indexedPerSecond: objects / indexed,
      heapBefore,
      heapImported,
      heapSteady,
      rssPeak,
      diskMB,
      compressed,
      ...searched,
      rescored,
    };
  } finally {
    await client.close().catch(() => {});
    await stop(server, () => {});
  }
}

const rows: Row[] = [];
const gens = new Map<number, { gen: EmbeddingLike; exact: number[][] }>();
for (const { dims, kind } of configs) {
  if (!gens.has(dims)) {
    const gen = new EmbeddingLike(dims, DATA_SHAPES[data]);
    gens.set(dims, { gen, exact: exactNeighbours(gen) });
  }
  const { gen, exact } = gens.get(dims)!;
  const row = await measure(dims, kind, exact, gen);
  rows.push(row);
  console.error(JSON.stringify(row));
}

const n = (x: number, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
console.log(`\n${n(objects)} objects (${data} data), ${queries} queries, recall@${K}; Weaviate ${asyncIndexing ? 'with' : 'without'} ASYNC_INDEXING, embatch's default batches (${configSchema.parse({}).weaviate.batch_size} x ${configSchema.parse({}).weaviate.concurrency})`);
console.log('config          acked/s indexed/s   live heap MB: empty imported steady  bytes/object  RSS peak MB  disk MB  recall@10  query p50/p95 ms  45M objects, one copy');
for (const r of rows) {
  const perObject = ((r.heapSteady - r.heapBefore) * 1048576) / objects;
  console.log(
    `${r.config.padEnd(14)} ${n(r.ackedPerSecond).padStart(8)} ${n(r.indexedPerSecond).padStart(9)} ${n(r.heapBefore).padStart(20)} ${n(r.heapImported).padStart(8)} ${n(r.heapSteady).padStart(6)} ${n(perObject).padStart(13)} ${n(r.rssPeak).padStart(12)} ${n(r.diskMB).padStart(8)} ${n(r.recall, 3).padStart(10)} ${`${n(r.queryMsP50, 1)}/${n(r.queryMsP95, 1)}`.padStart(17)}  ${n((perObject * 45e6) / 2 ** 30, 0)} GB heap, ${n(((r.diskMB / objects) * 45e6) / 1024, 0)} GB disk${r.compressed || r.config.endsWith('none') ? '' : ' (NOT compressed)'}`,
  );
  for (const x of r.rescored) console.log(`    the same searches at rescore_limit ${x.rescoreLimit}: recall@${K} ${n(x.recall, 3)}, query p50/p95 ${n(x.queryMsP50, 1)}/${n(x.queryMsP95, 1)} ms`);
}
