/**
 * A real Weaviate server for tests, CI and local use, built from its Go module (no Docker here).
 *
 *   node dist/scripts/weaviate.js install            build the pinned server once (cached per user)
 *   node dist/scripts/weaviate.js start [--fresh]    install if needed, start on loopback, wait until ready
 *   node dist/scripts/weaviate.js start --nodes 3    a cluster of 3 nodes on loopback, until every node is HEALTHY
 *   ... start --async-indexing                        ASYNC_INDEXING=true (or WEAVIATE_ASYNC_INDEXING=true): objects
 *                                                     are acknowledged first and indexed in the background
 *   node dist/scripts/weaviate.js stop               stop it (every node of a cluster) cleanly
 *
 * Ports: WEAVIATE_HTTP_PORT (8080) and WEAVIATE_GRPC_PORT (50051); the cluster and Raft ports are derived from the
 * HTTP port, so two servers on different HTTP ports do not collide. Data, pid and log live in .tmp/weaviate/.
 * WEAVIATE_API_KEY, when set, starts the server with API-key authentication instead of anonymous access.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const WEAVIATE_VERSION = '1.39.2';
const MODULE = 'github.com/weaviate/weaviate/cmd/weaviate-server';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ServerOptions {
  httpPort: number;
  grpcPort: number;
  /** Gossip, data, Raft and Raft RPC ports; by default the HTTP port + 1000..1003. */
  clusterPorts?: [number, number, number, number] | undefined;
  /** Where data, pid and log files go. */
  dir: string;
  apiKey?: string | undefined;
  memoryLimit: string;
  readyTimeoutMs: number;
  /** A node of a cluster (see clusterOptions); a single node by default. */
  node?: NodeRole | undefined;
  /** ASYNC_INDEXING: the server acknowledges objects before they are in the vector index and builds it in the background. */
  asyncIndexing?: boolean | undefined;
  /** More of Weaviate's environment variables (benches: ASYNC_INDEXING_STALE_TIMEOUT...). */
  env?: Record<string, string> | undefined;
  /** Go's pprof endpoints on this loopback port (off by default): benches read the live heap after a forced GC there. */
  profilingPort?: number | undefined;
}

/** A node's place in a cluster: its name, how many nodes the cluster has, and where to join it. */
export interface NodeRole {
  name: string;
  size: number;
  /** `name:raftPort` of every node. */
  raftJoin: string;
  /** `127.0.0.1:gossipPort` of the first node, for every other node. */
  gossipJoin?: string | undefined;
}

export function defaultOptions(env: NodeJS.ProcessEnv = process.env): ServerOptions {
  return {
    httpPort: Number(env.WEAVIATE_HTTP_PORT ?? 8080),
    grpcPort: Number(env.WEAVIATE_GRPC_PORT ?? 50051),
    dir: env.EMBATCH_WEAVIATE_DIR ?? path.join(ROOT, '.tmp', 'weaviate'),
    apiKey: env.WEAVIATE_API_KEY || undefined,
    memoryLimit: env.WEAVIATE_MEMORY_LIMIT ?? '4GiB',
    asyncIndexing: env.WEAVIATE_ASYNC_INDEXING === 'true',
    readyTimeoutMs: Number(env.WEAVIATE_READY_TIMEOUT_MS ?? 120_000),
  };
}

/** The binary's folder: per user and version, outside the checkout, so every clone on the machine shares one build. */
export function binaryPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.EMBATCH_WEAVIATE_BIN_DIR ?? path.join(env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'), 'embatch', `weaviate-v${WEAVIATE_VERSION}`);
  return path.join(dir, 'weaviate-server');
}

export function goAvailable(): boolean {
  return spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Builds the pinned server with `go install` unless it is already there; Go's module and build caches are reused.
 * Once per machine and version whatever runs at the same time (test files side by side, a bench, `npm run
 * weaviate:start`): the build holds a lock file next to the binary, the others wait for it and use its binary, and
 * the binary appears under its name only once whole (built into a temporary folder, then renamed).
 */
export function install(log: (line: string) => void = console.error): string {
  const bin = binaryPath();
  if (existsSync(bin)) return bin;
  if (!goAvailable()) throw new Error(`the Weaviate server is not installed (${bin}) and Go is not on PATH to build it; install Go 1.26+ or point WEAVIATE_URL at a running Weaviate`);
  mkdirSync(path.dirname(bin), { recursive: true });
  const lock = `${bin}.lock`;
  let waited = false;
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(lock, 'utf8') || 0);
      if (!holder || !running(holder)) {
        // Left by a build that died: take it over.
        rmSync(lock, { force: true });
        continue;
      }
      if (!waited) log(`waiting for the Weaviate build of process ${holder} to finish...`);
      waited = true;
      sleepSync(500);
      if (existsSync(bin)) return bin;
    }
  }
  try {
    if (existsSync(bin)) return bin;
    log(`building Weaviate ${WEAVIATE_VERSION} with go install (the first time takes a few minutes)...`);
    const started = Date.now();
    const staging = mkdtempSync(path.join(path.dirname(bin), '.build-'));
    try {
      const result = spawnSync('go', ['install', `${MODULE}@v${WEAVIATE_VERSION}`], {
        stdio: ['ignore', 'inherit', 'inherit'],
        env: { ...process.env, CGO_ENABLED: '0', GOBIN: staging, GOFLAGS: '-mod=mod' },
      });
      const built = path.join(staging, path.basename(bin));
      if (result.status !== 0 || !existsSync(built)) throw new Error(`go install ${MODULE}@v${WEAVIATE_VERSION} failed (exit ${result.status})`);
      renameSync(built, bin);
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
    log(`built ${bin} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return bin;
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Blocks the thread for `ms` (the install is synchronous, like the build it waits for). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const pidFile = (o: ServerOptions) => path.join(o.dir, `weaviate-${o.httpPort}.pid`);
const logFile = (o: ServerOptions) => path.join(o.dir, `weaviate-${o.httpPort}.log`);
const dataDir = (o: ServerOptions) => path.join(o.dir, `data-${o.httpPort}`);
export const serverUrl = (o: ServerOptions) => `http://127.0.0.1:${o.httpPort}`;

/** A node's cluster and Raft ports: given, or 1000 above its HTTP port (8080 -> 9080-9083). */
export function clusterPortsOf(o: ServerOptions): [number, number, number, number] {
  const base = o.httpPort + 1000;
  return o.clusterPorts ?? [base, base + 1, base + 2, base + 3];
}

/**
 * The options of each node of an `n`-node cluster on loopback (the set-up of notes/scale.md section 4): every node
 * gets `ports(i)` (HTTP, gRPC, a block of four cluster ports), the names node1..n, the Raft peers of all, and the
 * first node's gossip port to join. Data, pid and log files are per HTTP port under `base.dir`.
 */
export function clusterOptions(base: ServerOptions, n: number, ports: (i: number) => { httpPort: number; grpcPort: number; clusterPorts: [number, number, number, number] }): ServerOptions[] {
  const nodes = Array.from({ length: n }, (_, i) => ({ ...base, ...ports(i), node: undefined as NodeRole | undefined }));
  const raftJoin = nodes.map((o, i) => `node${i + 1}:${o.clusterPorts[2]}`).join(',');
  const gossipJoin = `127.0.0.1:${nodes[0]!.clusterPorts[0]}`;
  return nodes.map((o, i) => ({ ...o, node: { name: `node${i + 1}`, size: n, raftJoin, gossipJoin: i === 0 ? undefined : gossipJoin } }));
}

/** The default ports of node i (from 0) of a cluster: HTTP and gRPC counted up, cluster ports in blocks of four. */
export function defaultClusterPorts(base: ServerOptions): (i: number) => { httpPort: number; grpcPort: number; clusterPorts: [number, number, number, number] } {
  const first = clusterPortsOf(base)[0];
  return (i) => {
    const g = first + 4 * i;
    return { httpPort: base.httpPort + i, grpcPort: base.grpcPort + i, clusterPorts: [g, g + 1, g + 2, g + 3] };
  };
}

/** The environment of a single local node: loopback only, no modules, no telemetry, no autoschema, memory capped. */
function serverEnv(o: ServerOptions): NodeJS.ProcessEnv {
  const [gossip, data, raft, raftRpc] = clusterPortsOf(o);
  const auth: NodeJS.ProcessEnv = o.apiKey
    ? { AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED: 'false', AUTHENTICATION_APIKEY_ENABLED: 'true', AUTHENTICATION_APIKEY_ALLOWED_KEYS: o.apiKey, AUTHENTICATION_APIKEY_USERS: 'embatch' }
    : { AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED: 'true' };
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...auth,
    PERSISTENCE_DATA_PATH: dataDir(o),
    DEFAULT_VECTORIZER_MODULE: 'none',
    API_BASED_MODULES_DISABLED: 'true',
    DISABLE_TELEMETRY: 'true',
    AUTOSCHEMA_ENABLED: 'false',
    CLUSTER_HOSTNAME: o.node?.name ?? 'node1',
    ...(o.node?.gossipJoin ? { CLUSTER_JOIN: o.node.gossipJoin } : {}),
    CLUSTER_IN_LOCALHOST: 'true',
    // This machine's own address is not one memberlist accepts as private: bind and advertise loopback.
    CLUSTER_BIND_ADDR: '127.0.0.1',
    CLUSTER_ADVERTISE_ADDR: '127.0.0.1',
    CLUSTER_GOSSIP_BIND_PORT: String(gossip),
    CLUSTER_DATA_BIND_PORT: String(data),
    RAFT_PORT: String(raft),
    RAFT_INTERNAL_RPC_PORT: String(raftRpc),
    RAFT_BOOTSTRAP_EXPECT: String(o.node?.size ?? 1),
    RAFT_JOIN: o.node?.raftJoin ?? `node1:${raft}`,
    GRPC_PORT: String(o.grpcPort),
    ...(o.profilingPort ? { GO_PROFILING_DISABLE: 'false', GO_PROFILING_PORT: String(o.profilingPort), DEBUG_ENDPOINTS_ENABLED: 'true' } : { GO_PROFILING_DISABLE: 'true' }),
    GOMEMLIMIT: o.memoryLimit,
    QUERY_DEFAULTS_LIMIT: '25',
    ...(o.asyncIndexing ? { ASYNC_INDEXING: 'true' } : {}),
    ...o.env,
  };
}

export async function isReady(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/v1/.well-known/ready`, { signal: AbortSignal.timeout(2000) });
    return res.status === 200;
  } catch {
    return false;
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface StartedServer {
  url: string;
  pid: number;
  startSeconds: number;
}

/** Starts the server in the background (it outlives this process) and waits until it is ready. */
export async function start(o: ServerOptions, opts: { fresh?: boolean; log?: (line: string) => void } = {}): Promise<StartedServer> {
  const log = opts.log ?? console.error;
  const bin = install(log);
  mkdirSync(o.dir, { recursive: true });
  if (existsSync(pidFile(o))) {
    const pid = Number(readFileSync(pidFile(o), 'utf8'));
    if (running(pid) && (await isReady(serverUrl(o)))) {
      log(`Weaviate already running at ${serverUrl(o)} (pid ${pid})`);
      return { url: serverUrl(o), pid, startSeconds: 0 };
    }
    rmSync(pidFile(o), { force: true });
  }
  if (await isReady(serverUrl(o))) throw new Error(`something else already answers on ${serverUrl(o)}; stop it or set WEAVIATE_HTTP_PORT`);
  if (opts.fresh) rmSync(dataDir(o), { recursive: true, force: true });
  mkdirSync(dataDir(o), { recursive: true });
  const out = openSync(logFile(o), 'w');
  const started = Date.now();
  const child: ChildProcess = spawn(bin, ['--host', '127.0.0.1', '--port', String(o.httpPort), '--scheme', 'http', '--read-timeout=600s', '--write-timeout=600s'], {
    env: serverEnv(o),
    stdio: ['ignore', out, out],
    detached: true,
  });
  closeSync(out);
  const pid = child.pid!;
  writeFileSync(pidFile(o), String(pid));
  child.unref();

  // Ctrl-C while waiting: leave nothing behind.
  const onSignal = () => {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {}
    rmSync(pidFile(o), { force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  try {
    while (!(await isReady(serverUrl(o)))) {
      if (!running(pid)) throw new Error(`Weaviate exited during start-up; its log:\n${tail(logFile(o))}`);
      if (Date.now() - started > o.readyTimeoutMs) {
        await stop(o);
        throw new Error(`Weaviate was not ready after ${o.readyTimeoutMs / 1000} s; its log:\n${tail(logFile(o))}`);
      }
      await sleep(250);
    }
  } finally {
    process.removeListener('SIGINT', onSignal);
  }
  const startSeconds = (Date.now() - started) / 1000;
  log(`Weaviate ${WEAVIATE_VERSION} ready at ${serverUrl(o)} (gRPC ${o.grpcPort}) after ${startSeconds.toFixed(1)} s; log: ${logFile(o)}`);
  return { url: serverUrl(o), pid, startSeconds };
}

const clusterFile = (dir: string) => path.join(dir, 'cluster.json');

/** The nodes `GET /v1/nodes` lists, with their status (HEALTHY, UNHEALTHY, UNAVAILABLE...). */
export async function clusterNodes(url: string, apiKey?: string): Promise<Array<{ name: string; status: string }>> {
  const res = await fetch(`${url}/v1/nodes`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`GET /v1/nodes: ${res.status}`);
  return ((await res.json()) as { nodes: Array<{ name: string; status: string }> }).nodes;
}

/**
 * Starts every node of a cluster (see clusterOptions) at once, since each waits for the others to elect a leader, then
 * waits until the first node's `/v1/nodes` lists every node HEALTHY. The nodes are recorded in `<dir>/cluster.json`
 * so that `stop` stops them all.
 */
export async function startCluster(nodes: ServerOptions[], opts: { fresh?: boolean; log?: (line: string) => void } = {}): Promise<StartedServer[]> {
  const first = nodes[0]!;
  mkdirSync(first.dir, { recursive: true });
  writeFileSync(clusterFile(first.dir), JSON.stringify(nodes.map((o) => ({ ...o, apiKey: undefined }))));
  const started = await Promise.all(nodes.map((o) => start(o, opts)));
  const deadline = Date.now() + first.readyTimeoutMs;
  for (;;) {
    const listed = await clusterNodes(serverUrl(first), first.apiKey).catch(() => []);
    if (listed.length === nodes.length && listed.every((n) => n.status === 'HEALTHY')) break;
    if (Date.now() > deadline) {
      await stopCluster(first.dir);
      throw new Error(`the cluster did not list ${nodes.length} HEALTHY nodes after ${first.readyTimeoutMs / 1000} s: ${JSON.stringify(listed)}`);
    }
    await sleep(250);
  }
  return started;
}

/** Stops every node recorded in `<dir>/cluster.json` (and forgets the cluster); false when there is none. */
export async function stopCluster(dir: string, log: (line: string) => void = console.error): Promise<boolean> {
  if (!existsSync(clusterFile(dir))) return false;
  const nodes = JSON.parse(readFileSync(clusterFile(dir), 'utf8')) as ServerOptions[];
  await Promise.all(nodes.map((o) => stop(o, log)));
  rmSync(clusterFile(dir), { force: true });
  return true;
}

/** Stops the server started for these options: SIGTERM, then SIGKILL after 30 s. */
export async function stop(o: ServerOptions, log: (line: string) => void = console.error): Promise<boolean> {
  if (!existsSync(pidFile(o))) {
    log(`no Weaviate started here on port ${o.httpPort}`);
    return false;
  }
  const pid = Number(readFileSync(pidFile(o), 'utf8'));
  if (running(pid)) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (running(pid) && Date.now() < deadline) await sleep(100);
    if (running(pid)) process.kill(pid, 'SIGKILL');
  }
  rmSync(pidFile(o), { force: true });
  log(`Weaviate on port ${o.httpPort} stopped`);
  return true;
}

/** Resident memory of a process in MB, from /proc (Linux); `peak`: its high-water mark (VmHWM). */
export function rssMB(pid: number, peak = false): number | undefined {
  try {
    const m = new RegExp(`${peak ? 'VmHWM' : 'VmRSS'}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU seconds (user and system) a running process has used so far, from /proc; undefined where there is none. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th, in clock ticks.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').pop()!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

function tail(file: string, lines = 12): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function flagValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i !== -1) return args[i + 1];
  return args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
}

async function cli(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  const o = { ...defaultOptions(), ...(rest.includes('--async-indexing') ? { asyncIndexing: true } : {}) };
  try {
    switch (command) {
      case 'install':
        console.log(install());
        return 0;
      case 'start': {
        const nodes = Number(flagValue(rest, '--nodes') ?? 1);
        if (!Number.isInteger(nodes) || nodes < 1) throw new Error('--nodes takes a whole number of nodes (1 or more)');
        if (nodes > 1) {
          const started = await startCluster(clusterOptions(o, nodes, defaultClusterPorts(o)), { fresh: rest.includes('--fresh') });
          console.error(`${nodes} nodes HEALTHY`);
          for (const server of started) console.log(server.url);
          return 0;
        }
        const server = await start(o, { fresh: rest.includes('--fresh') });
        await sleep(2000);
        const rss = rssMB(server.pid);
        if (rss !== undefined) console.error(`idle memory ${rss.toFixed(0)} MB`);
        console.log(server.url);
        return 0;
      }
      case 'stop':
        if (!(await stopCluster(o.dir))) await stop(o);
        return 0;
      case 'url':
        console.log(serverUrl(o));
        return 0;
      default:
        console.error('usage: weaviate.js install | start [--fresh] [--nodes N] [--async-indexing] | stop | url');
        return 2;
    }
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) process.exitCode = await cli();
