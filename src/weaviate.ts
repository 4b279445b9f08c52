/**
 * Weaviate: connecting, and the `EntityString` collection (the seed's schema: original_string, hash_value, field_type,
 * frequency, one self-provided vector named "default", cosine). An existing collection that does not match is an
 * error before anything is written.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import weaviate, { type Collection, type WeaviateClient } from 'weaviate-client';
import type { Config } from './config.js';
import { EmbatchError } from './errors.js';

export const PROPERTIES = ['original_string', 'hash_value', 'field_type', 'frequency'] as const;

export type EntityProperties = {
  original_string: string;
  hash_value: string;
  field_type: string;
  frequency: number;
};

/** Where Weaviate is, as config.yml says, in the terms of weaviate-client's connection. */
export function weaviateAddress(config: Config) {
  const w = config.weaviate;
  const url = new URL(w.url);
  const secure = url.protocol === 'https:';
  return {
    host: url.hostname,
    httpPort: Number(url.port || (secure ? 443 : 80)),
    grpcPort: w.grpc_port,
    secure,
    apiKey: w.api_key ? new weaviate.ApiKey(w.api_key) : undefined,
    timeout: { insert: w.timeout_insert, query: w.timeout_query, init: w.timeout_init },
  };
}

export function unreachable(config: Config, err: unknown): EmbatchError {
  const w = config.weaviate;
  return new EmbatchError('WEAVIATE_UNREACHABLE', `cannot connect to Weaviate at ${w.url} (gRPC port ${w.grpc_port}): ${(err as Error).message}. Start it (npm run weaviate:start), set weaviate.url / WEAVIATE_URL, or use --sink jsonl`, { cause: err });
}

/** Tries to connect; a failure is tried again twice (a kept-alive connection the server closed meanwhile fails once). */
const CONNECT_WAITS_MS = [500, 1500];

export async function connectWeaviate(config: Config): Promise<WeaviateClient> {
  const a = weaviateAddress(config);
  for (let attempt = 0; ; attempt++) {
    try {
      return await weaviate.connectToCustom({
        httpHost: a.host,
        httpPort: a.httpPort,
        httpSecure: a.secure,
        grpcHost: a.host,
        grpcPort: a.grpcPort,
        grpcSecure: a.secure,
        authCredentials: a.apiKey,
        timeout: a.timeout,
      });
    } catch (err) {
      if (attempt >= CONNECT_WAITS_MS.length) throw unreachable(config, err);
      await sleep(CONNECT_WAITS_MS[attempt]!);
    }
  }
}

/** The quantizer of the configured compression, for the HNSW index ("none" explicitly: a server's DEFAULT_QUANTIZATION is not applied). */
function quantizer(c: Config['weaviate']['compression']) {
  const q = weaviate.configure.vectorIndex.quantizer;
  switch (c.type) {
    case 'rq':
      return q.rq({ bits: c.bits, rescoreLimit: c.rescore_limit });
    case 'pq':
      return q.pq({ centroids: c.centroids, trainingLimit: c.training_limit, ...(c.segments ? { segments: c.segments } : {}) });
    case 'bq':
      return q.bq({ rescoreLimit: c.rescore_limit });
    default:
      return q.none();
  }
}

/**
 * Creates the collection when missing, with the configured replication, shards and compression; checks an existing
 * one's properties, vector length, replication, shards and compression against the configuration before anything is
 * written (a collection that differs is never used as if it matched). Returns it at the configured consistency level
 * (inserts and reads).
 */
export async function ensureCollection(client: WeaviateClient, config: Config, dimensions: number | null): Promise<Collection<EntityProperties>> {
  const w = config.weaviate;
  const name = w.collection;
  if (!(await client.collections.exists(name))) {
    await client.collections.create({
      name,
      description: 'Entity string values with their embeddings (embatch)',
      properties: [
        { name: 'original_string', dataType: weaviate.configure.dataType.TEXT },
        { name: 'hash_value', dataType: weaviate.configure.dataType.TEXT, tokenization: 'field' },
        { name: 'field_type', dataType: weaviate.configure.dataType.TEXT, tokenization: 'field' },
        { name: 'frequency', dataType: weaviate.configure.dataType.INT },
      ],
      replication: weaviate.configure.replication({ factor: w.replication_factor, asyncEnabled: w.async_replication }),
      ...(w.shards ? { sharding: weaviate.configure.sharding({ desiredCount: w.shards }) } : {}),
      vectorizers: weaviate.configure.vectors.selfProvided({
        name: 'default',
        vectorIndexConfig: weaviate.configure.vectorIndex.hnsw({ distanceMetric: 'cosine', ef: w.ef, efConstruction: w.ef_construction, maxConnections: w.max_connections, quantizer: quantizer(w.compression) }),
      }),
    });
    return client.collections.get<EntityProperties>(name).withConsistency(w.consistency_level);
  }
  const collection = client.collections.get<EntityProperties>(name).withConsistency(w.consistency_level);
  const existing = await collection.config.get();
  const props = new Map(existing.properties.map((p) => [p.name, p.dataType]));
  const wrong = PROPERTIES.filter((p) => !props.has(p) || props.get(p) !== (p === 'frequency' ? 'int' : 'text'));
  if (wrong.length)
    throw new EmbatchError('WEAVIATE_SCHEMA', `collection ${name} exists but its properties do not match (${wrong.join(', ')} missing or of another type; expected original_string, hash_value, field_type: text, frequency: int). Use another weaviate.collection or delete it`);
  const differences = clusterDifferences(existing, w);
  if (differences.length)
    throw new EmbatchError('WEAVIATE_CONFIG', `collection ${name} exists with other settings than the configuration: ${differences.join('; ')}. Nothing was written. Set the configuration to match, or use another weaviate.collection`, { exitCode: 2 });
  if (dimensions !== null) {
    const sample = await collection.query.fetchObjects({ limit: 1, includeVector: true });
    const vector = sample.objects[0]?.vectors?.default as number[] | undefined;
    if (vector && vector.length !== dimensions)
      throw new EmbatchError('WEAVIATE_DIMENSIONS', `collection ${name} holds ${vector.length}-dimensional vectors, but these results have ${dimensions}; use another weaviate.collection (or the same model and dimensions as before)`);
  }
  return collection;
}

/** How an existing collection's replication, sharding and compression differ from the configuration. */
export function clusterDifferences(existing: Awaited<ReturnType<Collection['config']['get']>>, w: Config['weaviate']): string[] {
  const out: string[] = [];
  if (existing.replication.factor !== w.replication_factor) out.push(`replication factor ${existing.replication.factor} (configured: weaviate.replication_factor ${w.replication_factor})`);
  if (w.shards && existing.sharding.desiredCount !== w.shards) out.push(`${existing.sharding.desiredCount} shard(s) (configured: weaviate.shards ${w.shards})`);
  const vectors = existing.vectorizers as Record<string, { indexConfig?: { quantizer?: { type?: string; bits?: number } } } | undefined>;
  const q = vectors.default?.indexConfig?.quantizer;
  const type = q?.type ?? 'none';
  if (type !== w.compression.type) out.push(`compression ${type} (configured: weaviate.compression.type ${w.compression.type})`);
  else if (type === 'rq' && q?.bits !== undefined && q.bits !== w.compression.bits) out.push(`rq with ${q.bits} bits (configured: weaviate.compression.bits ${w.compression.bits})`);
  return out;
}
