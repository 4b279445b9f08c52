/**
 * The package as a user gets it: `npm pack`, the tarball installed in a new project, the examples type-checked against
 * the installed types (`embatch` and `embatch/transforms` through the exports map) and run against the simulator and
 * a real Weaviate.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import weaviate from 'weaviate-client';
import { fixture, fixtureStrings, ROOT, tempDir } from './helpers.js';
import { weaviateForTests } from './weaviate-support.js';

const run = promisify(execFile);
const server = await weaviateForTests();
after(() => server.target?.release());
// Skipped only without a server and without EMBATCH_TEST_REQUIRE_WEAVIATE (CI sets it: a missing server fails there).
const skip = server.skip;

const project = mkdtempSync(path.join(tmpdir(), 'embatch-package-'));
after(() => rmSync(project, { recursive: true, force: true }));
before(async () => {
  // --ignore-scripts: dist is built already (by `npm test`), and rebuilding it here would change it under other tests.
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', project], { cwd: ROOT, maxBuffer: 1 << 26 });
  const [packed] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const files = packed!.files.map((f) => f.path);
  assert.ok(files.includes('dist/src/index.d.ts') && files.includes('dist/transforms/index.d.ts'), 'the types are in the package');
  assert.ok(!files.some((f) => f.startsWith('dist/test/') || f.startsWith('dist/bench/')), 'tests and benches are not');
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'embatch-examples', private: true, type: 'module' }));
  // From the npm cache where it can (npm ci filled it with the same dependencies).
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(project, packed!.filename)], { cwd: project, maxBuffer: 1 << 26 });
  for (const name of readdirSync(path.join(ROOT, 'examples'))) copyFileSync(path.join(ROOT, 'examples', name), path.join(project, name));
  writeFileSync(
    path.join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', skipLibCheck: false, types: ['node'], typeRoots: [path.join(ROOT, 'node_modules', '@types')] },
      include: ['*.ts'],
    }),
  );
});

test('the examples type-check against the installed package, with its declarations checked too', async () => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = await run(process.execPath, [tsc, '-p', project], { cwd: project }).catch((err: { stdout: string; code: number }) => err);
  assert.equal('code' in result ? result.code : 0, 0, 'stdout' in result ? result.stdout : '');
  assert.deepEqual(readdirSync(path.join(project, 'out')).filter((n) => n.endsWith('.js')).sort(), ['index-precomputed-vectors.js', 'prepare-from-records.js', 'run-with-progress.js']);
});

const example = async (name: string, args: string[], env: Record<string, string> = {}) => {
  const { stdout } = await run(process.execPath, [path.join(project, 'out', `${name}.js`), ...args], { cwd: project, env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
};

test('prepare from an async generator of records: exact distinct strings, and a second run of the same source adds nothing', async (t) => {
  const work = tempDir(t);
  const s = await example('prepare-from-records', [work]);
  // 1,000 records: titles "Symphony No. 0..99", persons "Composer 0..6" on two records of three.
  assert.deepEqual([s.rows, s.distinctStrings, s.newStrings, s.requestLines], [1000, 107, 107, 107]);
  assert.equal(s.stringsSeen, 1000 + 666);
  const again = await example('prepare-from-records', [work]);
  assert.deepEqual([again.newStrings, again.requestLines, again.alreadyKnown], [0, 0, 107]);
});

test('the whole pipeline from a program against the simulator, with its progress as events', async (t) => {
  const work = tempDir(t);
  const objects = path.join(work, 'objects.jsonl');
  const r = await example('run-with-progress', [fixture('catalog.csv'), work, objects], { OPENAI_API_KEY: '' });
  const { strings } = fixtureStrings('catalog.csv');
  const total = [...strings.values()].reduce((n, fields) => n + fields.size, 0);
  assert.equal(r.done, true);
  assert.deepEqual([r.strings.total, r.strings.indexed, r.objects.indexed], [strings.size, strings.size, total]);
  assert.equal(readFileSync(objects, 'utf8').trim().split('\n').length, total);
  assert.deepEqual([r.events[0], r.events.includes('submitted'), r.events.includes('indexed')], ['prepared', true, true]);
});

test('precomputed vectors into Weaviate with the results stages: the ids embatch gives, twice is idempotent', { skip }, async (t) => {
  const target = server.target!;
  const work = tempDir(t);
  const file = path.join(work, 'vectors.jsonl');
  const lines = Array.from({ length: 250 }, (_, i) => JSON.stringify({ text: `text ${i % 125}`, field: i < 125 ? 'title' : 'person', vector: Array.from({ length: 8 }, (_, d) => Math.sin(i + d)) }));
  writeFileSync(file, lines.join('\n') + '\n');
  const collection = `Pkg${process.pid}`;
  const env = { WEAVIATE_URL: target.url, WEAVIATE_GRPC_PORT: String(target.grpcPort), EMBATCH_WEAVIATE__COLLECTION: collection, ...(target.apiKey ? { WEAVIATE_API_KEY: target.apiKey } : {}) };
  assert.deepEqual(await example('index-precomputed-vectors', [file], env), { collection, acked: 250, rejected: 0 });
  assert.deepEqual(await example('index-precomputed-vectors', [file], env), { collection, acked: 250, rejected: 0 });
  const client = await weaviate.connectToLocal({ host: target.host, port: target.httpPort, grpcPort: target.grpcPort });
  try {
    const c = client.collections.get(collection);
    assert.equal((await c.aggregate.overAll()).totalCount, 250, 'every object once');
    // The id the pipeline gives the text in that field, worked out by the pipeline's own functions.
    const { hashValue, objectUuid } = await import('../transforms/build-objects.js');
    const o = await c.query.fetchObjectById(objectUuid(hashValue('text 7'), 'person'));
    assert.equal(o?.properties.original_string, 'text 7');
  } finally {
    await client.close();
  }
  // A bad line stops the run naming the file and line.
  writeFileSync(file, `${lines[0]}\n{"text": "x"}\n`);
  await assert.rejects(example('index-precomputed-vectors', [file], env), (err: { stderr: string }) => err.stderr.includes(`${file}:2`) || err.stderr.includes(`${file}, line 2`));
});
