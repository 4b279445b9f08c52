import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Collection } from 'weaviate-client';
import { EmbatchError } from '../src/errors.js';
import type { EntityProperties } from '../src/weaviate.js';
import { BATCH_STREAM } from './batch-items.js';
import type { EntityObject } from './build-objects.js';

export interface UpsertCounters {
  sent: number;
  acked: number;
  rejected: number;
  objectRetries: number;
  requestRetries: number;
  requests: number;
}

export interface UpsertOptions {
  collection: Collection<EntityProperties>;
  batchSize: number;
  maxBatchBytes: number;
  /** insertMany requests in flight at once. The client spends ~1 ms per object and polls every 500 ms per call. */
  concurrency: number;
  maxObjectRetries: number;
  requestRetries: number;
  /** Called with the objects Weaviate acknowledged, before the stream moves past them. */
  onAcked: (objects: EntityObject[]) => Promise<void>;
  /** Called with the objects Weaviate refused for good (after their retries) and its message for each. */
  onRejected: (rejected: Array<{ object: EntityObject; message: string }>) => Promise<void>;
  counters: UpsertCounters;
  log?: (message: string) => void;
}

export function newUpsertCounters(): UpsertCounters {
  return { sent: 0, acked: 0, rejected: 0, objectRetries: 0, requestRetries: 0, requests: 0 };
}

/** Bytes an object costs on the wire, roughly: the vector as float32 plus the text properties. */
const objectBytes = (o: EntityObject) => o.vector.length * 4 + o.properties.original_string.length * 3 + 128;

/**
 * Upserts objects with collection.data.insertMany: requests cut by count and bytes (well under the gRPC message
 * limit), up to `concurrency` in flight. The write callback waits while that many are in flight, so the source
 * pauses when Weaviate is slower and memory stays flat. Objects Weaviate rejects are retried, then reported with the
 * server's message; a failed request (server down, timeout) is retried with backoff, and if Weaviate stays down the
 * stream fails with everything acknowledged so far already reported through onAcked. Upserts are idempotent (the
 * ids are deterministic), so sending an object twice is harmless.
 */
export function upsertWeaviate(options: UpsertOptions): Writable {
  const { counters } = options;
  let pending: EntityObject[] = [];
  let pendingBytes = 0;
  const inFlight = new Set<Promise<void>>();
  const retryQueue: Array<{ object: EntityObject; attempts: number; message: string }> = [];
  let failure: Error | undefined;

  const send = (objects: EntityObject[], attempts = new Map<EntityObject, number>()): void => {
    const p = sendRequest(objects, attempts)
      .catch((err: Error) => {
        failure ??= err;
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  const sendRequest = async (input: EntityObject[], attempts: Map<EntityObject, number>): Promise<void> => {
    // Weaviate keeps only the last copy of an id repeated in one request; send each id once.
    const byUuid = new Map<string, EntityObject>();
    for (const o of input) byUuid.set(o.uuid, o);
    const objects = [...byUuid.values()];
    const payload = objects.map((o) => ({ id: o.uuid, properties: o.properties, vectors: { default: toNumbers(o.vector) } }));
    counters.requests++;
    for (let attempt = 0; ; attempt++) {
      try {
        counters.sent += objects.length;
        const result = await options.collection.data.insertMany(payload);
        const acked: EntityObject[] = [];
        const refused: Array<{ object: EntityObject; message: string }> = [];
        objects.forEach((o, i) => {
          const error = result.errors[i];
          if (!error) acked.push(o);
          else {
            const tries = (attempts.get(o) ?? 0) + 1;
            if (tries <= options.maxObjectRetries) {
              counters.objectRetries++;
              retryQueue.push({ object: o, attempts: tries, message: error.message });
            } else {
              counters.rejected++;
              refused.push({ object: o, message: error.message });
            }
          }
        });
        counters.acked += acked.length;
        await options.onAcked(acked);
        if (refused.length) await options.onRejected(refused);
        return;
      } catch (err) {
        if (attempt >= options.requestRetries)
          throw new EmbatchError('WEAVIATE_DOWN', `Weaviate did not take a batch of ${objects.length} objects after ${attempt + 1} attempts: ${(err as Error).message}. Everything acknowledged so far is recorded; rerun when Weaviate is back`, { cause: err });
        counters.requestRetries++;
        const wait = Math.min(250 * 2 ** attempt, 10_000) * (0.75 + Math.random() / 2);
        options.log?.(`Weaviate request failed (${(err as Error).message}); retrying in ${(wait / 1000).toFixed(1)} s`);
        await sleep(wait);
      }
    }
  };

  /** Cuts full requests off the pending list; with `all`, the remainder too. */
  const cut = (all: boolean) => {
    while (pending.length && (all || pending.length >= options.batchSize || pendingBytes >= options.maxBatchBytes)) {
      let n = 0;
      let bytes = 0;
      while (n < pending.length && n < options.batchSize && (n === 0 || bytes + objectBytes(pending[n]!) <= options.maxBatchBytes)) bytes += objectBytes(pending[n++]!);
      const request = pending.splice(0, n);
      pendingBytes -= bytes;
      send(request);
    }
  };

  const drain = async (limit: number) => {
    while (inFlight.size > limit) await Promise.race(inFlight);
    if (failure) throw failure;
  };

  return new Writable({
    ...BATCH_STREAM,
    write(objects: EntityObject[], _enc, callback) {
      for (const o of objects) {
        pending.push(o);
        pendingBytes += objectBytes(o);
      }
      cut(false);
      drain(options.concurrency - 1).then(() => callback(), callback);
    },
    final(callback) {
      const finish = async () => {
        cut(true);
        await drain(0);
        // Objects Weaviate refused get their retries once the stream has been sent.
        while (retryQueue.length) {
          const round = retryQueue.splice(0);
          await sleep(200);
          const attempts = new Map(round.map((r) => [r.object, r.attempts]));
          for (let i = 0; i < round.length; i += options.batchSize) {
            send(round.slice(i, i + options.batchSize).map((r) => r.object), attempts);
            await drain(options.concurrency - 1);
          }
          await drain(0);
        }
      };
      finish().then(() => callback(), callback);
    },
  });
}

function toNumbers(v: Float32Array): number[] {
  // A plain loop: Array.from on a Float32Array costs ~50 µs per 1,536-d vector (streams-perf.md §3.1).
  const out = new Array<number>(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i]!;
  return out;
}
