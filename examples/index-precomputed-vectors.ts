/**
 * Vectors computed elsewhere into Weaviate with embatch's results stages: a JSONL file of
 * {"text": ..., "field": ..., "vector": [...]} lines becomes objects with the ids an embatch run would give them
 * (so a later run replaces them instead of adding copies), sent in batches with backpressure and retries.
 *
 *   node index-precomputed-vectors.js vectors.jsonl
 *
 * Weaviate and the collection come from the configuration as for the CLI: config.yml in the working directory if
 * there is one, WEAVIATE_URL, WEAVIATE_GRPC_PORT, EMBATCH_WEAVIATE__COLLECTION, ...
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { pipeline } from 'node:stream/promises';
import { connectWeaviate, ensureCollection, InputError, loadConfig, openObjectWriter, type WeaviateObjectWriter } from 'embatch';
import { batchItems, entityObject, newUpsertCounters, upsertWeaviate, type EntityObject } from 'embatch/transforms';

const file = process.argv[2];
if (!file) throw new Error('usage: index-precomputed-vectors <vectors.jsonl>');
const { config } = loadConfig();

/** One object per line; a line that is not {text, field, vector} stops the run, naming the file and line. */
async function* objects(): AsyncGenerator<EntityObject> {
  let line = 0;
  for await (const text of createInterface({ input: createReadStream(file!), crlfDelay: Infinity })) {
    line++;
    if (!text.trim()) continue;
    let r: { text?: unknown; field?: unknown; vector?: unknown };
    try {
      r = JSON.parse(text);
    } catch (err) {
      throw new InputError('BAD_LINE', file!, line, 'not JSON', { cause: err });
    }
    if (typeof r.text !== 'string' || typeof r.field !== 'string' || !Array.isArray(r.vector)) throw new InputError('BAD_LINE', file!, line, 'expected {"text": string, "field": string, "vector": number[]}');
    yield entityObject(r.text, r.field, Float32Array.from(r.vector as number[]));
  }
}

const client = await connectWeaviate(config);
let writer: WeaviateObjectWriter | undefined;
try {
  const w = config.weaviate;
  await ensureCollection(client, config, null);
  // The collection is created (or checked) through the client; the objects go through embatch's writer.
  writer = await openObjectWriter(config);
  const counters = newUpsertCounters();
  await pipeline(
    objects(),
    batchItems<EntityObject>(w.batch_size),
    upsertWeaviate({ writer, batchSize: w.batch_size, maxBatchBytes: w.max_batch_bytes, concurrency: w.concurrency, maxObjectRetries: w.max_object_retries, requestRetries: w.request_retries, counters }),
  );
  console.log(JSON.stringify({ collection: w.collection, acked: counters.acked, rejected: counters.rejected }));
} finally {
  writer?.close();
  await client.close();
}
