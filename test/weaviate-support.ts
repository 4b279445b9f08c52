/**
 * A real Weaviate for the tests that need one:
 *  - WEAVIATE_URL (with WEAVIATE_GRPC_PORT and WEAVIATE_API_KEY) points at any running server, e.g. one in Docker;
 *  - otherwise a server is built (once per machine) and started on free ports for this test file, then stopped;
 *  - where neither is possible the tests are skipped with the reason, unless EMBATCH_TEST_REQUIRE_WEAVIATE=1 (CI),
 *    which turns a missing server into a failure.
 */
import { existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { binaryPath, clusterNodes, clusterOptions, goAvailable, isReady, start, startCluster, stop, stopCluster, defaultOptions, type ServerOptions } from '../scripts/weaviate.js';
import { ROOT, until } from './helpers.js';

export interface WeaviateTarget {
  url: string;
  host: string;
  httpPort: number;
  grpcPort: number;
  apiKey: string | undefined;
  /** Stops the server if this test file started it. */
  release(): Promise<void>;
  /** Options to stop and restart the server this file started (undefined for an external one). */
  own: ServerOptions | undefined;
}

export type WeaviateForTests = { target: WeaviateTarget; skip: false } | { target: undefined; skip: string };

const required = () => process.env.EMBATCH_TEST_REQUIRE_WEAVIATE === '1';

/**
 * `own: true` always starts a server for this file (for tests that stop and restart it, or need API-key auth), even
 * when WEAVIATE_URL names a shared one.
 */
export async function weaviateForTests(opts: { apiKey?: string; own?: boolean } = {}): Promise<WeaviateForTests> {
  const external = process.env.WEAVIATE_URL;
  if (external && !opts.apiKey && !opts.own) {
    const url = new URL(external);
    if (!(await isReady(external))) return missing(`WEAVIATE_URL=${external} is not ready`);
    return {
      skip: false,
      target: {
        url: external,
        host: url.hostname,
        httpPort: Number(url.port || 8080),
        grpcPort: Number(process.env.WEAVIATE_GRPC_PORT ?? 50051),
        apiKey: process.env.WEAVIATE_API_KEY || undefined,
        own: undefined,
        release: async () => {},
      },
    };
  }
  if (!existsSync(binaryPath()) && !goAvailable())
    return missing('no WEAVIATE_URL is set and Go is not installed to build the Weaviate server (see README, "Tests")');
  // Test files run in parallel, each with its own server: every port it needs is one the OS handed out as free.
  let options: ServerOptions | undefined;
  for (let attempt = 1; ; attempt++) {
    const [httpPort, grpcPort] = await freePorts(2);
    const base = await freeBlock(4);
    options = { ...defaultOptions(), httpPort: httpPort!, grpcPort: grpcPort!, clusterPorts: [base, base + 1, base + 2, base + 3], apiKey: opts.apiKey, dir: path.join(ROOT, '.tmp', `weaviate-test-${process.pid}-${httpPort}`) };
    try {
      await start(options, { fresh: true, log: () => {} });
      break;
    } catch (err) {
      rmSync(options.dir, { recursive: true, force: true });
      // A port taken between asking and binding: once more with new ones.
      if (attempt >= 2) return missing(`the test server did not start: ${(err as Error).message}`);
    }
  }
  const { httpPort, grpcPort } = options;
  return {
    skip: false,
    target: {
      url: `http://127.0.0.1:${httpPort}`,
      host: '127.0.0.1',
      httpPort,
      grpcPort,
      apiKey: opts.apiKey,
      own: options,
      release: async () => {
        await stop(options!, () => {});
        rmSync(options!.dir, { recursive: true, force: true });
      },
    },
  };
}

export interface ClusterForTests {
  /** The first node, which the CLI and clients talk to. */
  target: WeaviateTarget;
  nodes: ServerOptions[];
  /** The process id of node `i` (from 0) as last started. */
  pid(i: number): number;
  /** Starts node `i` again (after a kill or a stop), on its data, and waits until every node is HEALTHY. */
  restart(i: number): Promise<void>;
  /** Names of the nodes and their status, as the first node's /v1/nodes lists them. */
  status(): Promise<Array<{ name: string; status: string }>>;
}

/** A cluster of `n` nodes of the pinned server on loopback, on ports the OS says are free, for one test file. */
export async function weaviateClusterForTests(n: number): Promise<{ cluster: ClusterForTests; skip: false } | { cluster: undefined; skip: string }> {
  // Always nodes of its own (WEAVIATE_URL is one server): the cluster tests kill and restart them.
  if (!existsSync(binaryPath()) && !goAvailable()) {
    const m = missing('Go is not installed to build the Weaviate server (see README, "Tests")');
    return { cluster: undefined, skip: m.skip as string };
  }
  const dir = path.join(ROOT, '.tmp', `weaviate-cluster-${process.pid}`);
  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(2 * n);
    const block = await freeBlock(4 * n);
    const nodes = clusterOptions({ ...defaultOptions(), dir, apiKey: undefined }, n, (i) => ({ httpPort: ports[2 * i]!, grpcPort: ports[2 * i + 1]!, clusterPorts: [block + 4 * i, block + 4 * i + 1, block + 4 * i + 2, block + 4 * i + 3] }));
    try {
      const started = await startCluster(nodes, { fresh: true, log: () => {} });
      const pids = started.map((s) => s.pid);
      const first = nodes[0]!;
      const url = `http://127.0.0.1:${first.httpPort}`;
      const status = () => clusterNodes(url);
      const cluster: ClusterForTests = {
        nodes,
        pid: (i) => pids[i]!,
        status,
        restart: async (i) => {
          await stop(nodes[i]!, () => {});
          pids[i] = (await start(nodes[i]!, { log: () => {} })).pid;
          await until(() => status().catch(() => []), (list) => list.length === n && list.every((node) => node.status === 'HEALTHY'), first.readyTimeoutMs, 250);
        },
        target: {
          url,
          host: '127.0.0.1',
          httpPort: first.httpPort,
          grpcPort: first.grpcPort,
          apiKey: undefined,
          own: first,
          release: async () => {
            await stopCluster(dir, () => {});
            rmSync(dir, { recursive: true, force: true });
          },
        },
      };
      return { cluster, skip: false };
    } catch (err) {
      await stopCluster(dir, () => {}).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      if (attempt >= 2) {
        const m = missing(`the test cluster did not start: ${(err as Error).message}`);
        return { cluster: undefined, skip: m.skip as string };
      }
    }
  }
}

function missing(reason: string): WeaviateForTests {
  if (required()) throw new Error(`EMBATCH_TEST_REQUIRE_WEAVIATE=1 but ${reason}`);
  const skip = `Weaviate tests skipped: ${reason}`;
  console.error(skip);
  return { target: undefined, skip };
}

const listen = (port: number) =>
  new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
const release = (servers: ReturnType<typeof createServer>[]) => Promise.all(servers.map((srv) => new Promise((resolve) => srv.close(resolve))));

/** `n` distinct ports the OS says are free now: all held open together, then released. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => listen(0)));
  const ports = servers.map((srv) => (srv.address() as { port: number }).port);
  await release(servers);
  return ports;
}

/**
 * The first of `n` consecutive free ports: Weaviate derives some cluster ports from others (data = gossip + 1), so
 * its cluster and Raft ports come as one block. Tried at random bases below the usual ephemeral range.
 */
async function freeBlock(n: number): Promise<number> {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * 12_000);
    const held: ReturnType<typeof createServer>[] = [];
    try {
      for (let i = 0; i < n; i++) held.push(await listen(base + i));
      return base;
    } catch {
      // taken: try another base
    } finally {
      await release(held);
    }
  }
}
