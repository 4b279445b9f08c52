/**
 * Weaviate benchmark: the same objects into the real Weaviate server through `embatch replay` and, in the same run,
 * through the official Python client v4 (batch.fixed_size and batch.dynamic), printing objects/s and the ratio.
 *
 *   node dist/bench/weaviate.js [lines]        (default 20,000 result lines, 1,536 dimensions)
 *
 * Uses WEAVIATE_URL / WEAVIATE_GRPC_PORT when set; otherwise starts a server of its own (npm run weaviate:start's
 * script) on port 8099. The Python client comes from .tmp/pyenv (created with pip install weaviate-client numpy when
 * missing). The Python side reads embatch's JSONL sink output, so it does strictly less work than embatch.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { defaultOptions, start, stop, type ServerOptions } from '../scripts/weaviate.js';
import { benchWorkDir, CLI, makeResultFile, ROOT } from './make-results.js';

const lines = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 20_000);
const dir = path.join(ROOT, '.tmp', 'bench-weaviate');
const py = path.join(ROOT, '.tmp', 'pyenv', 'bin', 'python');
if (!existsSync(py)) execFileSync('python3', ['-m', 'venv', path.join(ROOT, '.tmp', 'pyenv')], { stdio: 'inherit' });
try {
  execFileSync(py, ['-c', 'import weaviate, numpy'], { stdio: 'ignore' });
} catch {
  execFileSync(path.join(ROOT, '.tmp', 'pyenv', 'bin', 'pip'), ['install', '-q', 'weaviate-client', 'numpy'], { stdio: 'inherit' });
}

let own: ServerOptions | undefined;
let url = process.env.WEAVIATE_URL;
let grpcPort = Number(process.env.WEAVIATE_GRPC_PORT ?? 50051);
if (!url) {
  own = { ...defaultOptions(), httpPort: 8099, grpcPort: 50099, dir: path.join(dir, 'server'), memoryLimit: '8GiB' };
  await start(own, { fresh: true });
  url = `http://127.0.0.1:${own.httpPort}`;
  grpcPort = own.grpcPort;
}
const httpPort = Number(new URL(url).port || 80);

try {
  const work = await benchWorkDir(dir, lines);
  const results = path.join(dir, `results-${lines}.jsonl`);
  if (!existsSync(results)) await makeResultFile(work, results, lines, 'base64');
  const objects = path.join(dir, `objects-${lines}.jsonl`);
  rmSync(objects, { force: true });
  const env = { ...process.env, WEAVIATE_URL: url, WEAVIATE_GRPC_PORT: String(grpcPort) };
  const cli = (args: string[]) => JSON.parse(execFileSync(process.execPath, [CLI, ...args, '--work-dir', work, '--json', '--config', path.join(ROOT, 'config.yml')], { env, encoding: 'utf8', maxBuffer: 1 << 26 }));
  cli(['replay', results, '--sink', `jsonl:${objects}`]);

  const rows: Array<[string, number, number]> = [];
  for (const mode of ['fixed', 'dynamic']) {
    const r = JSON.parse(execFileSync(py, [path.join(ROOT, 'bench', 'weaviate_python.py'), objects, `BenchPy${mode}`, mode, String(httpPort), String(grpcPort)], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()!);
    if (r.failed) console.log(`python ${mode}: ${r.failed} failed objects`);
    rows.push([`python v4 batch.${mode === 'fixed' ? 'fixed_size(100, 2)' : 'dynamic()'}`, r.objects, r.seconds]);
  }
  const concurrencies = (process.env.BENCH_CONCURRENCY ?? '4').split(',').map(Number);
  const sizes = (process.env.BENCH_BATCH_SIZE ?? '200').split(',').map(Number);
  for (const concurrency of concurrencies)
    for (const size of sizes) {
      const collection = `BenchEmbatch${concurrency}x${size}`;
      const r = cli(['replay', results, '--set', `weaviate.collection=${collection}`, '--set', `weaviate.concurrency=${concurrency}`, '--set', `weaviate.batch_size=${size}`]);
      if (r.acked !== r.objects) console.log(`embatch: ${r.objects - r.acked} objects not acknowledged`);
      rows.push([`embatch replay (${size} x ${concurrency} in flight)`, r.acked, r.elapsedSeconds]);
    }
  console.log(`\n${lines.toLocaleString('en-US')} result lines, ${rows[0]![1].toLocaleString('en-US')} objects of 1,536 dimensions, Weaviate at ${url}`);
  const bestPython = Math.max(...rows.filter((r) => r[0].startsWith('python')).map((r) => r[1] / r[2]));
  for (const [label, n, s] of rows) console.log(`${label.padEnd(40)} ${s.toFixed(1).padStart(7)} s ${Math.round(n / s).toLocaleString('en-US').padStart(7)} objects/s ${((100 * (n / s)) / bestPython).toFixed(0).padStart(5)}% of the best Python mode`);
} finally {
  if (own) await stop(own);
}
