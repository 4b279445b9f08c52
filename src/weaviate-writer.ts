/**
 * The Weaviate side of the upsertWeaviate stage: objects sent through weaviate-client's own gRPC connection
 * (`ConnectionGRPC`) as its own generated batch messages, each vector as the bytes of its Float32Array.
 *
 * Why not `collection.data.insertMany`: it converts each vector to a number array and back to bytes, serializes one
 * object per `setTimeout` and polls for the end every 500 ms, so a request of 200 objects costs at least half a second
 * however fast the server is. On an async-indexing Weaviate that held embatch to ~1,200 objects/s; this path sends the
 * same messages over the same connection at a quarter of the client's CPU for the sending itself, and replay went to
 * ~2,900 objects/s (BENCHMARKS.md "Weaviate").
 */
import { endianness } from 'node:os';
import { ConnectionGRPC } from 'weaviate-client';
import type { EntityObject } from '../transforms/build-objects.js';
import type { ObjectWriter } from '../transforms/upsert-weaviate.js';
import type { Config } from './config.js';
import { unreachable, weaviateAddress } from './weaviate.js';

type GrpcBatch = Awaited<ReturnType<ConnectionGRPC['batch']>>;
type BatchObjectMessage = Parameters<GrpcBatch['withObjects']>[0]['objects'][number];
type PropertiesMessage = NonNullable<BatchObjectMessage['properties']>;

export interface WeaviateObjectWriter extends ObjectWriter {
  close(): void;
}

const NONE: never[] = [];
const NO_BYTES = new Uint8Array(0);
const LITTLE_ENDIAN = endianness() === 'LE';

/** A Float32Array as the little-endian float32 bytes Weaviate reads: a view without a copy on little-endian machines. */
function vectorBytes(v: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const view = new DataView(new ArrayBuffer(v.length * 4));
  v.forEach((x, i) => view.setFloat32(i * 4, x, true));
  return new Uint8Array(view.buffer);
}

/** The batch message of one object: what the client's own Serialize.batchObject makes for it, without the conversions. */
function message(collection: string, o: EntityObject): BatchObjectMessage {
  const properties: PropertiesMessage = {
    nonRefProperties: o.properties,
    singleTargetRefProps: NONE,
    multiTargetRefProps: NONE,
    numberArrayProperties: NONE,
    intArrayProperties: NONE,
    textArrayProperties: NONE,
    booleanArrayProperties: NONE,
    objectProperties: NONE,
    objectArrayProperties: NONE,
    emptyListProps: NONE,
  };
  return {
    uuid: o.uuid,
    collection,
    tenant: '',
    properties,
    vector: NONE,
    vectorBytes: NO_BYTES,
    vectors: [{ name: 'default', index: 0, vectorBytes: vectorBytes(o.vector), type: 0 }],
  };
}

/**
 * Opens a gRPC connection to the configured Weaviate for inserting into `config.weaviate.collection` at its
 * consistency level (the collection must exist: see ensureCollection). Close it when done.
 */
export async function openObjectWriter(config: Config): Promise<WeaviateObjectWriter> {
  const a = weaviateAddress(config);
  const scheme = a.secure ? 'https' : 'http';
  let connection: ConnectionGRPC;
  try {
    ({ connection } = await ConnectionGRPC.use({
      host: `${scheme}://${a.host}:${a.httpPort}`,
      scheme,
      grpcAddress: `${a.host}:${a.grpcPort}`,
      grpcSecure: a.secure,
      headers: {},
      apiKey: a.apiKey,
      timeout: a.timeout,
    }));
  } catch (err) {
    throw unreachable(config, err);
  }
  const { collection, consistency_level } = config.weaviate;
  return {
    async insert(objects) {
      const batch = await connection.batch(collection, consistency_level);
      const reply = await batch.withObjects({ objects: objects.map((o) => message(collection, o)) });
      return new Map(reply.errors.map((e) => [e.index, e.error]));
    },
    close: () => connection.close(),
  };
}
