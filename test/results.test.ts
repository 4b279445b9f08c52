import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import weaviate, { type WeaviateClient } from 'weaviate-client';
import { hashValue, objectUuid } from '../transforms/build-objects.js';
import { toVector } from '../transforms/decode-results.js';
import { float32ToBase64 as float32Base64 } from '../transforms/write-objects-jsonl.js';
import { hashEmbedding } from '../src/simulator/embedding.js';
import { fixture, fixtureStrings, runCli, tempDir } from './helpers.js';
import { weaviateForTests } from './weaviate-support.js';

const server = await weaviateForTests();
after(() => server.target?.release());
const skip = server.skip;

let client: WeaviateClient | undefined;
after(() => client?.close());
async function weaviateClient(): Promise<WeaviateClient> {
  const t = server.target!;
  client ??= await weaviate.connectToLocal({ host: t.host, port: t.httpPort, grpcPort: t.grpcPort, authCredentials: t.apiKey ? new weaviate.ApiKey(t.apiKey) : undefined });
  return client;
}

let n = 0;
/** A work directory and a collection of its own for each test, and a CLI runner with the simulator's pace set fast. */
function env(t: Parameters<typeof tempDir>[0], extra: Record<string, string> = {}) {
  const work = tempDir(t);
  const collection = `T${process.pid}x${++n}`;
  const target = server.target!;
  const vars: Record<string, string> = {
    WEAVIATE_URL: target.url,
    WEAVIATE_GRPC_PORT: String(target.grpcPort),
    EMBATCH_WEAVIATE__COLLECTION: collection,
    EMBATCH_DIMENSIONS: '64',
    EMBATCH_BATCH_POLL_INTERVAL: '0.3',
    EMBATCH_SIMULATOR__VALIDATING_SECONDS: '0.1',
    EMBATCH_SIMULATOR__FINALIZING_SECONDS: '0.1',
    ...(target.apiKey ? { WEAVIATE_API_KEY: target.apiKey } : {}),
    ...extra,
  };
  const cli = (args: string[], more: Record<string, string> = {}) => runCli([...args, '--work-dir', work], { env: { ...vars, ...more } });
  const json = async (args: string[], more: Record<string, string> = {}) => {
    const r = await cli([...args, '--json'], more);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  return { work, collection, cli, json };
}

async function count(collection: string): Promise<number> {
  return (await (await weaviateClient()).collections.get(collection).aggregate.overAll()).totalCount;
}

test('index after a simulated batch run: one object per (string, field), seed-compatible ids, vectors as embedded', { skip }, async (t) => {
  const { work, collection, json } = env(t);
  const run = await json(['run', fixture('catalog.csv'), '--simulate', '--wait']);
  assert.equal(run.done, true);
  const c = (await weaviateClient()).collections.get(collection);
  // One object per distinct string and field it occurs in (a name as person and as subject is two), from the fixture.
  const { strings } = fixtureStrings('catalog.csv');
  const total = [...strings.values()].reduce((n, fields) => n + fields.size, 0);
  assert.equal(await count(collection), total);
  assert.deepEqual([run.indexed.files, run.indexed.objects, run.indexed.acked, run.indexed.rejected], [1, total, total, 0]);
  const uuid = objectUuid(hashValue('Schubert, Franz, 1797-1828'), 'person');
  const o = await c.query.fetchObjectById(uuid, { includeVector: true });
  assert.ok(o, 'the object has the seed system\'s id');
  assert.equal(o!.properties.original_string, 'Schubert, Franz, 1797-1828');
  assert.equal(o!.properties.field_type, 'person');
  assert.equal(o!.properties.hash_value, hashValue('Schubert, Franz, 1797-1828'));
  assert.equal(o!.properties.frequency, strings.get('Schubert, Franz, 1797-1828')!.get('person'));
  const expected = hashEmbedding('Schubert, Franz, 1797-1828', 64);
  (o!.vectors.default as number[]).forEach((x, i) => assert.ok(Math.abs(x - expected[i]!) < 1e-6));
  const asSubject = await c.query.fetchObjectById(objectUuid(hashValue('Schubert, Franz, 1797-1828'), 'subjects'));
  assert.equal(asSubject?.properties.field_type, 'subjects', 'the same string is indexed under each field it occurs in');

  // Replaying the stored file twice leaves the collection unchanged.
  for (let i = 0; i < 2; i++) {
    const r = await json(['replay', path.join(work, 'results', 'batch_results_*.jsonl')]);
    assert.equal(r.acked, total);
    assert.equal(await count(collection), total);
  }
  // index again: the run indexed the file (above), so nothing is waiting and nothing is sent.
  const again = await json(['index']);
  assert.equal(again.files, 0);
  assert.equal(await count(collection), total);

  const q = await json(['query', 'Schubert, Franz', '--field', 'person', '-k', '3', '--simulate']);
  assert.equal(q.hits[0].text, 'Schubert, Franz, 1797-1828');
  assert.ok(q.hits[0].distance < q.hits[1].distance);
});

test('float and base64 results give the same objects; the JSONL sink writes what Weaviate gets', { skip }, async (t) => {
  const vectors: Record<string, Float32Array> = {};
  for (const format of ['float', 'base64']) {
    const { work, json } = env(t, { EMBATCH_ENCODING_FORMAT: format });
    await json(['run', fixture('collision.csv'), '--simulate', '--wait', '--embed-fields', 'person', '--sink', `jsonl:${path.join(work, 'objects.jsonl')}`]);
    const lines = readFileSync(path.join(work, 'objects.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    for (const l of lines) {
      // The sink writes vectors in the configured encoding: a float array, or base64 of little-endian float32.
      assert.equal(typeof l.vector === 'string', format === 'base64');
      vectors[`${format}:${l.uuid}`] = toVector(l.vector) as Float32Array;
    }
  }
  const keys = Object.keys(vectors).filter((k) => k.startsWith('float:'));
  assert.equal(keys.length, 2);
  for (const k of keys) assert.deepEqual(vectors[k], vectors[k.replace('float:', 'base64:')]);
});

test('the CRC32 collision pair is two objects', { skip }, async (t) => {
  const { collection, json } = env(t);
  await json(['run', fixture('collision.csv'), '--simulate', '--wait', '--embed-fields', 'person']);
  const c = (await weaviateClient()).collections.get(collection);
  const all = await c.query.fetchObjects({ limit: 10 });
  assert.deepEqual(all.objects.map((o) => o.properties.original_string).sort(), ['buckeroo', 'plumless']);
  assert.notEqual(all.objects[0]!.uuid, all.objects[1]!.uuid);
});

test('a file of good, failed, corrupt and unknown lines: good ones indexed, every other one counted and recorded', { skip }, async (t) => {
  const { work, collection, json } = env(t);
  await json(['run', fixture('catalog.csv'), '--simulate', '--wait', '--sink', 'none']);
  const good = readFileSync(path.join(work, 'results', 'batch_results_000001.jsonl'), 'utf8').trim().split('\n');
  const first = JSON.parse(good[0]!);
  const mixed = [
    ...good.slice(0, 10),
    '{"custom_id": "truncated',
    'not json at all',
    JSON.stringify({ ...first, custom_id: 'deadbeef_person_999999' }),
    JSON.stringify({ id: 'x', custom_id: JSON.parse(good[11]!).custom_id, response: { status_code: 500, body: { error: { message: 'boom', type: 'server_error' } } }, error: null }),
    JSON.stringify({ id: 'y', custom_id: JSON.parse(good[12]!).custom_id, response: null, error: { code: 'batch_expired', message: 'expired' } }),
    JSON.stringify({ ...JSON.parse(good[13]!), response: { status_code: 200, body: { data: [{ embedding: [1, 2, 3] }] } } }),
    JSON.stringify({ ...JSON.parse(good[14]!), response: { status_code: 200, body: { data: [{ embedding: [...Array(63).fill(0.1), null] }] } } }),
    // A real id under a CRC32 that is not its text's (a line from another work directory): refused, not mis-indexed.
    JSON.stringify({ ...first, custom_id: first.custom_id.replace(/^[0-9a-f]{8}/, (crc: string) => (crc === '00000000' ? '00000001' : '00000000')) }),
  ];
  const file = path.join(work, 'mixed.jsonl');
  writeFileSync(file, mixed.join('\n') + '\n');
  const r = await json(['replay', file]);
  assert.equal(r.lines, 18);
  assert.deepEqual(r.failedLines, { corrupt_line: 2, unknown_custom_id: 2, server_error: 1, batch_expired: 1, wrong_dimensions: 1, bad_embedding: 1 });
  const rejects = readFileSync(r.rejectsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(rejects.map((x) => x.line).sort((a, b) => a - b), [11, 12, 13, 14, 15, 16, 17, 18]);
  assert.ok(r.acked >= 10 && (await count(collection)) === r.acked);
  // The server error and the expired line are what retry picks up.
  const status = await json(['status', '--offline']);
  assert.equal(status.failures.failedRetryable, 2);
});

test('an existing collection with other dimensions is a clear error before anything is written', { skip }, async (t) => {
  const { collection, json } = env(t);
  await json(['run', fixture('collision.csv'), '--simulate', '--wait', '--embed-fields', 'person']);
  const before = await count(collection);
  const other = env(t, { EMBATCH_WEAVIATE__COLLECTION: collection, EMBATCH_DIMENSIONS: '32' });
  const r = await other.cli(['run', fixture('nfd.csv'), '--simulate', '--wait', '--embed-fields', 'person']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /holds 64-dimensional vectors, but these results have 32/);
  assert.equal(await count(collection), before);
});

test('objects Weaviate refuses are retried, then written to the rejects file with the server\'s message', { skip }, async (t) => {
  const { work, collection, json, cli } = env(t, { EMBATCH_WEAVIATE__MAX_OBJECT_RETRIES: '1' });
  await json(['run', fixture('collision.csv'), '--simulate', '--wait', '--embed-fields', 'person']);
  assert.equal(await count(collection), 2);
  const lines = readFileSync(path.join(work, 'results', 'batch_results_000001.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const short = lines[1];
  short.response.body.data[0].embedding = float32Base64(new Float32Array(8).fill(0.5));
  const file = path.join(work, 'odd.jsonl');
  writeFileSync(file, JSON.stringify(short) + '\n');
  // Replayed as an OpenAI-compatible server's own model, which the tool knows nothing of: no dimension check of its
  // own, so Weaviate is the one to refuse the odd vector.
  const replayed = await cli(['replay', file, '--json'], { EMBATCH_MODEL: 'my-own-model', EMBATCH_ALLOW_UNKNOWN_MODEL: 'true', EMBATCH_DIMENSIONS: 'null' });
  assert.equal(replayed.code, 1, 'an object refused is a failure');
  assert.match(replayed.stderr, /1 object\(s\) refused by weaviate:.*index_rejects\.jsonl.*--retry-rejects/);
  const r = JSON.parse(replayed.stdout);
  assert.equal(r.acked, 0);
  assert.equal(r.rejected, 1);
  assert.equal(r.objectRetries, 1, 'retried once before giving up');
  assert.equal(await count(collection), 2);
  const rejects = readFileSync(path.join(work, 'index_rejects.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const refused = rejects.find((x) => x.code === 'weaviate_rejected');
  assert.ok(refused && /dimension|length|vector/i.test(refused.reason), JSON.stringify(rejects));
});

test('indexed marks belong to a target: the demo into JSONL, then Weaviate, gets every object into Weaviate', { skip }, async (t) => {
  const { work, collection, json, cli } = env(t);
  const { strings } = fixtureStrings('catalog.csv');
  const total = [...strings.values()].reduce((n, fields) => n + fields.size, 0);
  const lineCount = (file: string) => readFileSync(file, 'utf8').trim().split('\n').length;
  // README's story: `npm run demo` (JSONL sink), then with Weaviate running, `embatch index`.
  const objects = path.join(work, 'objects.jsonl');
  const demo = await json(['run', fixture('catalog.csv'), '--simulate', '--wait', '--sink', `jsonl:${objects}`]);
  assert.equal(demo.indexed.acked, total);
  assert.equal(lineCount(objects), total);
  assert.equal(await (await weaviateClient()).collections.exists(collection), false, 'nothing went to Weaviate yet');
  const into = await json(['index']);
  assert.deepEqual([into.files, into.acked, into.alreadyIndexed], [1, total, 0]);
  assert.equal(await count(collection), total);
  // Each target has taken everything now: nothing is sent twice to either, and a new target gets it all.
  const again = await cli(['index']);
  assert.equal(again.code, 0);
  assert.match(again.stderr, /nothing to index into weaviate:/);
  assert.equal((await json(['index', '--sink', `jsonl:${objects}`])).files, 0);
  assert.equal(lineCount(objects), total, 'the JSONL target was not written twice');
  const other = path.join(work, 'other.jsonl');
  assert.equal((await json(['index', '--sink', `jsonl:${other}`])).acked, total);
  assert.equal(lineCount(other), total);
});

test('an object Weaviate refused is not sent again until --retry-rejects, once its cause is gone', { skip }, async (t) => {
  // The collection takes 64-dimensional vectors (another work directory's objects went in first).
  const first = env(t);
  await first.json(['run', fixture('nfd.csv'), '--simulate', '--wait', '--embed-fields', 'person']);
  const { work, json, cli } = env(t, { EMBATCH_WEAVIATE__COLLECTION: first.collection, EMBATCH_WEAVIATE__MAX_OBJECT_RETRIES: '0' });
  const collection = first.collection;
  const before = await count(collection);
  await json(['run', fixture('collision.csv'), '--simulate', '--wait', '--embed-fields', 'person', '--sink', 'none']);
  // One result line gets an 8-dimensional vector, which the collection refuses (as an OpenAI-compatible server's own
  // model, unknown to the tool: no dimension check of its own).
  const file = path.join(work, 'results', 'batch_results_000001.jsonl');
  const good = readFileSync(file, 'utf8');
  const lines = good.trim().split('\n').map((l) => JSON.parse(l));
  lines[0].response.body.data[0].embedding = float32Base64(new Float32Array(8).fill(0.5));
  writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  const odd = { EMBATCH_MODEL: 'my-own-model', EMBATCH_ALLOW_UNKNOWN_MODEL: 'true', EMBATCH_DIMENSIONS: 'null' };
  const refused = await cli(['index', '--json'], odd);
  assert.equal(refused.code, 1);
  assert.deepEqual([JSON.parse(refused.stdout).acked, JSON.parse(refused.stdout).rejected], [1, 1]);
  assert.equal(await count(collection), before + 1);
  // Not sent again by a plain index: the file is taken (one object acknowledged, one refused for good).
  assert.match((await cli(['index'], odd)).stderr, /nothing to index/);
  // The cause gone (the line as OpenAI sent it), --retry-rejects sends exactly the refused object.
  writeFileSync(file, good);
  const retried = await json(['index', '--retry-rejects'], odd);
  assert.deepEqual([retried.files, retried.acked, retried.rejected, retried.alreadyIndexed], [1, 1, 0, 1]);
  assert.equal(await count(collection), before + 2);
  assert.match((await cli(['index', '--retry-rejects'], odd)).stderr, /nothing to index/);
});

test('verify finds missing, differing, unrecorded and extra objects, writes them down, and --repair puts the collection right', { skip }, async (t) => {
  const { work, collection, cli, json } = env(t);
  const run = await json(['run', fixture('catalog.csv'), '--simulate', '--wait']);
  const total = [...fixtureStrings('catalog.csv').strings.values()].reduce((n, fields) => n + fields.size, 0);
  assert.deepEqual([run.status.objects.indexed, run.status.strings.indexed], [total, run.status.strings.total]);
  const clean = await json(['verify']);
  assert.deepEqual([clean.objects, clean.matching, clean.missing, clean.differs, clean.unrecorded, clean.extra], [total, total, 0, 0, 0, 0]);

  // Three objects deleted, one changed, one that is not ours added, and two marks lost from the store.
  const c = (await weaviateClient()).collections.get(collection);
  const some = (await c.query.fetchObjects({ limit: 6 })).objects;
  for (const o of some.slice(0, 3)) await c.data.deleteById(o.uuid);
  await c.data.update({ id: some[3]!.uuid, properties: { frequency: 999 } });
  await c.data.insert({ id: objectUuid('f'.repeat(32), 'title'), properties: { original_string: 'not ours', hash_value: 'f'.repeat(32), field_type: 'title', frequency: 1 }, vectors: { default: Array.from({ length: 64 }, () => 0.125) } });
  const { StateStore, stringKey } = await import('../src/store.js');
  const store = await StateStore.open(work);
  const target = store.findTarget(run.status.objects.target)!;
  const unmarked: Array<[number, string]> = [];
  for (const o of some.slice(4, 6)) {
    const [record] = await store.lookupStrings([stringKey(String(o.properties.original_string))]);
    unmarked.push([record!.id, String(o.properties.field_type)]);
  }
  await store.unmarkIndexed(target, unmarked);
  await store.close();

  const found = await cli(['verify', '--json']);
  assert.equal(found.code, 1, 'missing and differing objects are a failure');
  const v = JSON.parse(found.stdout);
  assert.deepEqual([v.objects, v.missing, v.differs, v.unrecorded, v.extra, v.matching], [total - 3 + 1, 3, 1, 2, 1, total - 6]);
  const findings = readFileSync(v.findingsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(findings.map((f) => f.kind).sort(), ['differs', 'missing', 'missing', 'missing', 'unrecorded', 'unrecorded']);
  assert.deepEqual(findings.find((f) => f.kind === 'differs').uuid, some[3]!.uuid);
  assert.deepEqual(new Set(findings.filter((f) => f.kind === 'unrecorded').map((f) => f.uuid)), new Set([some[4]!.uuid, some[5]!.uuid]));

  const repaired = await json(['verify', '--repair']);
  assert.deepEqual([repaired.repaired.resent, repaired.repaired.marked, repaired.repaired.index.acked], [4, 2, 4]);
  const after = await json(['verify']);
  assert.deepEqual([after.objects, after.matching, after.missing, after.differs, after.unrecorded, after.extra], [total + 1, total, 0, 0, 0, 1]);
  assert.equal((await c.query.fetchObjectById(some[3]!.uuid))!.properties.frequency, fixtureStrings('catalog.csv').strings.get(String(some[3]!.properties.original_string))!.get(String(some[3]!.properties.field_type)));
  const status = await json(['status', '--offline']);
  assert.deepEqual([status.objects.indexed, status.objects.total], [total, total]);
});
