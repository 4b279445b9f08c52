import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import weaviate, { generateUuid5, type WeaviateClient } from 'weaviate-client';
import { weaviateForTests } from './weaviate-support.js';

const server = await weaviateForTests();
after(() => server.target?.release());

/** A deterministic unit vector, so the nearest neighbour of object i's vector is object i. */
function vectorFor(i: number, dims = 32): number[] {
  const v = Array.from({ length: dims }, (_, d) => Math.sin((i + 1) * (d + 1) * 0.731) + (d === i % dims ? 2 : 0));
  const norm = Math.hypot(...v);
  return v.map((x) => x / norm);
}

test('the real server and weaviate-client work together: create, insertMany, count, vector, nearVector, delete', { skip: server.skip }, async () => {
  const target = server.target!;
  const client: WeaviateClient = await weaviate.connectToLocal({
    host: target.host,
    port: target.httpPort,
    grpcPort: target.grpcPort,
    authCredentials: target.apiKey ? new weaviate.ApiKey(target.apiKey) : undefined,
  });
  try {
    const name = `SmokeTest${process.pid}`;
    if (await client.collections.exists(name)) await client.collections.delete(name);
    await client.collections.create({
      name,
      properties: [
        { name: 'label', dataType: weaviate.configure.dataType.TEXT },
        { name: 'n', dataType: weaviate.configure.dataType.INT },
      ],
      vectorizers: weaviate.configure.vectors.selfProvided({ vectorIndexConfig: weaviate.configure.vectorIndex.hnsw({ distanceMetric: 'cosine' }) }),
    });
    const collection = client.collections.get(name);
    const objects = Array.from({ length: 300 }, (_, i) => ({ id: generateUuid5(`smoke|${i}`), properties: { label: `object ${i}`, n: i }, vectors: { default: vectorFor(i) } }));
    const result = await collection.data.insertMany(objects);
    assert.equal(result.hasErrors, false, JSON.stringify(result.errors));
    assert.equal(Object.keys(result.uuids).length, 300);

    const count = await collection.aggregate.overAll();
    assert.equal(count.totalCount, 300);

    const one = await collection.query.fetchObjectById(generateUuid5('smoke|123'), { includeVector: true });
    assert.equal(one?.properties.n, 123);
    const stored = one!.vectors.default as number[];
    vectorFor(123).forEach((x, d) => assert.ok(Math.abs(x - stored[d]!) < 1e-6));

    const near = await collection.query.nearVector(vectorFor(77), { limit: 3, returnMetadata: ['distance'] });
    assert.equal(near.objects[0]!.properties.n, 77);
    assert.ok(near.objects[0]!.metadata!.distance! < 1e-5);

    // Upserting the same ids again leaves the count unchanged.
    await collection.data.insertMany(objects.slice(0, 50));
    assert.equal((await collection.aggregate.overAll()).totalCount, 300);

    await client.collections.delete(name);
    assert.equal(await client.collections.exists(name), false);
  } finally {
    await client.close();
  }
});
