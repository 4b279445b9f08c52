/**
 * The Weaviate sink stage against the real server: what it retries and what it does not.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, test } from 'node:test';
import weaviate, { type WeaviateClient } from 'weaviate-client';
import { objectUuid, type EntityObject } from '../transforms/build-objects.js';
import { isTransientObjectError, newUpsertCounters, upsertWeaviate, type UpsertOptions } from '../transforms/upsert-weaviate.js';
import { openObjectWriter, type WeaviateObjectWriter } from '../src/weaviate-writer.js';
import { loadConfig } from '../src/config.js';
import { ensureCollection, type EntityProperties } from '../src/weaviate.js';
import { weaviateForTests } from './weaviate-support.js';

const server = await weaviateForTests();
after(() => server.target?.release());
const skip = server.skip;

let client: WeaviateClient | undefined;
after(() => client?.close());
const writers: WeaviateObjectWriter[] = [];
after(() => writers.forEach((w) => w.close()));
let n = 0;

/** A new collection whose vectors are 8-dimensional (one object put first fixes the length). */
async function freshCollection() {
  const t = server.target!;
  client ??= await weaviate.connectToLocal({ host: t.host, port: t.httpPort, grpcPort: t.grpcPort, authCredentials: t.apiKey ? new weaviate.ApiKey(t.apiKey) : undefined });
  const { config } = loadConfig({ env: {}, flags: { weaviate: { collection: `Upsert${process.pid}x${++n}`, url: t.url, grpc_port: t.grpcPort, api_key: t.apiKey ?? null } } });
  const collection = await ensureCollection(client, config, 8);
  await collection.data.insert({ id: objectUuid('0'.repeat(32), 'seed'), properties: props('seed'), vectors: { default: [1, 0, 0, 0, 0, 0, 0, 0] } });
  const writer = await openObjectWriter(config);
  writers.push(writer);
  return Object.assign(writer, { collection });
}

const props = (text: string): EntityProperties => ({ original_string: text, hash_value: '0'.repeat(32), field_type: 'title', frequency: 1 });

/** `count` objects in batches of 10; `dims` other than 8 makes Weaviate refuse each of them (a bad object). */
function objects(count: number, dims: number): EntityObject[][] {
  const all = Array.from({ length: count }, (_, i): EntityObject => {
    const text = `object ${i}`;
    return { uuid: objectUuid(i.toString(16).padStart(32, '0'), 'title'), properties: props(text), vector: new Float32Array(dims).fill(1 / Math.sqrt(dims)), stringId: i, field: 'title' };
  });
  return Array.from({ length: count / 10 }, (_, b) => all.slice(b * 10, b * 10 + 10));
}

function stage(writer: UpsertOptions['writer'], over: Partial<UpsertOptions>) {
  const counters = newUpsertCounters();
  const options: UpsertOptions = { writer, batchSize: 10, maxBatchBytes: 1 << 20, concurrency: 2, maxObjectRetries: 1, requestRetries: 3, counters, onAcked: async () => {}, onRejected: async () => {}, ...over };
  return { counters, sink: upsertWeaviate(options) };
}

test('a failure to record acknowledged objects is the store\'s: not retried, not sent again, not called Weaviate\'s', { skip }, async () => {
  const writer = await freshCollection();
  const storeFailure = new Error('the state store refused the write');
  const { counters, sink } = stage(writer, { concurrency: 1, onAcked: async () => Promise.reject(storeFailure) });
  await assert.rejects(pipeline(Readable.from(objects(50, 8)), sink), (err) => err === storeFailure);
  assert.equal(counters.requestRetries, 0, 'Weaviate answered: no request is retried');
  assert.equal(counters.sent, 10, 'the first request, once');
  assert.equal(counters.acked, 10);
});

test('objects Weaviate refuses are sent again as a request\'s worth gathers, not held until the end; then reported with its message', { skip }, async () => {
  const writer = await freshCollection();
  let refused = 0;
  const messages = new Set<string>();
  let refusedWhenSourceEnded = -1;
  const { counters, sink } = stage(writer, {
    onRejected: async (r) => {
      refused += r.length;
      for (const { message } of r) messages.add(message);
    },
  });
  const source = (async function* () {
    yield* objects(100, 4);
    refusedWhenSourceEnded = refused;
  })();
  await pipeline(Readable.from(source), sink);
  assert.deepEqual([counters.rejected, counters.objectRetries, counters.acked, refused], [100, 100, 0, 100]);
  assert.ok(refusedWhenSourceEnded > 0, 'retries went out (and came back refused) while the source was still read');
  assert.ok([...messages].every((m) => /vector/i.test(m) && !isTransientObjectError(m)), [...messages].join('; '));
});

test('objects arrive as sent: each vector from its Float32Array\'s bytes (views into a larger buffer too), the properties with frequency an int', { skip }, async () => {
  const writer = await freshCollection();
  // Eight 8-d vectors cut out of one buffer at different offsets, as decoded result lines share theirs.
  const shared = new Float32Array(8 * 8 + 3).map((_, i) => Math.fround(Math.sin(i + 1) / 3));
  const sent = Array.from({ length: 8 }, (_, i): EntityObject => {
    const text = `view ${i} \u00e9\u4e2d`;
    return { uuid: objectUuid(i.toString(16).padStart(32, 'a'), 'person'), properties: { ...props(text), field_type: 'person', frequency: 1000 + i }, vector: shared.subarray(3 + i * 8, 3 + i * 8 + 8), stringId: i, field: 'person' };
  });
  const acked: string[] = [];
  const { counters, sink } = stage(writer, { onAcked: async (objects) => void acked.push(...objects.map((o) => o.uuid)) });
  await pipeline(Readable.from([sent.slice(0, 5), sent.slice(5)]), sink);
  assert.deepEqual([counters.acked, counters.rejected, acked.length], [8, 0, 8]);
  for (const o of sent) {
    const back = await writer.collection.query.fetchObjectById(o.uuid, { includeVector: true });
    assert.ok(back, o.uuid);
    assert.deepEqual(back.properties, o.properties);
    assert.deepEqual(back.vectors.default, Array.from(o.vector));
  }
});

test('per-object errors that say the cluster could not take the object now are transient; a bad object is not', () => {
  for (const m of [
    'resolve node name "node2" to host',
    'cannot achieve consistency level "QUORUM": read repair error',
    'put object: connect: Post "http://127.0.0.1:7112/replicas/indices/T/shards/x/objects": dial tcp 127.0.0.1:7112: connect: connection refused',
    'context deadline exceeded',
    'shard abc: not ready',
  ])
    assert.equal(isTransientObjectError(m), true, m);
  for (const m of ['new node has a vector with length 4. Existing nodes have vectors with length 8', "invalid text property 'frequency' on class 'Entity': not a string", 'id already exists with another class'])
    assert.equal(isTransientObjectError(m), false, m);
});
