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
import { binaryPath, goAvailable, isReady, start, stop, defaultOptions, type ServerOptions } from '../scripts/weaviate.js';
import { ROOT } from './helpers.js';

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
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  const options: ServerOptions = { ...defaultOptions(), httpPort, grpcPort, apiKey: opts.apiKey, dir: path.join(ROOT, '.tmp', `weaviate-test-${process.pid}-${httpPort}`) };
  try {
    await start(options, { fresh: true, log: () => {} });
  } catch (err) {
    return missing(`the test server did not start: ${(err as Error).message}`);
  }
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
        await stop(options, () => {});
        rmSync(options.dir, { recursive: true, force: true });
      },
    },
  };
}

function missing(reason: string): WeaviateForTests {
  if (required()) throw new Error(`EMBATCH_TEST_REQUIRE_WEAVIATE=1 but ${reason}`);
  const skip = `Weaviate tests skipped: ${reason}`;
  console.error(skip);
  return { target: undefined, skip };
}

/** A port the OS says is free now; cluster ports sit at +1000..+1003, so keep below 64000. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.on('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    if (port < 64_000) return port;
  }
}
