import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { EmbatchError } from '../src/errors.js';
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

/** Where the objects go: one insert request at a time (embatch's is openObjectWriter, over weaviate-client's gRPC connection). */
export interface ObjectWriter {
  /**
   * Inserts or replaces the objects in one request. Resolves with Weaviate's message for each object it refused, by
   * position in `objects`; rejects when the request failed as a whole (then it is retried).
   */
  insert(objects: readonly EntityObject[]): Promise<Map<number, string>>;
}

export interface UpsertOptions {
  writer: ObjectWriter;
  batchSize: number;
  maxBatchBytes: number;
  /** Insert requests in flight at once. */
  concurrency: number;
  maxObjectRetries: number;
  requestRetries: number;
  /** Called with the objects Weaviate acknowledged, before the stream moves past them. */
  onAcked?: (objects: EntityObject[]) => Promise<void>;
  /**
   * Called with the objects Weaviate refused for good (after their retries) and its message for each. Without it, a
   * refusal fails the stream (nothing is dropped silently).
   */
  onRejected?: (rejected: Array<{ object: EntityObject; message: string }>) => Promise<void>;
  /** The cluster's nodes that are not healthy (name and status), asked when Weaviate stays unable: the error names them. */
  unhealthyNodes?: () => Promise<string[]>;
  /** Counts kept as the stream goes (a fresh set when not given). */
  counters?: UpsertCounters;
  log?: (message: string) => void;
}

export function newUpsertCounters(): UpsertCounters {
  return { sent: 0, acked: 0, rejected: 0, objectRetries: 0, requestRetries: 0, requests: 0 };
}

/** Bytes an object costs on the wire, roughly: the vector as float32 plus the text properties. */
const objectBytes = (o: EntityObject) => o.vector.length * 4 + o.properties.original_string.length * 3 + 128;

/**
 * Upserts objects through an ObjectWriter: requests cut by count and bytes (well under the gRPC message
 * limit), up to `concurrency` in flight. The write callback waits while that many are in flight, so the source
 * pauses when Weaviate is slower and memory stays flat. Objects Weaviate rejects are retried, then reported with the
 * server's message; a failed request (server down, timeout) is retried with backoff, and if Weaviate stays down the
 * stream fails with everything acknowledged so far already reported through onAcked. Upserts are idempotent (the
 * ids are deterministic), so sending an object twice is harmless.
 */
export function upsertWeaviate(options: UpsertOptions): Writable {
  const counters = options.counters ?? newUpsertCounters();
  const onAcked = options.onAcked ?? (async () => {});
  const onRejected =
    options.onRejected ??
    (async (rejected: Array<{ object: EntityObject; message: string }>) => {
      throw new EmbatchError('WEAVIATE_REJECTED', `Weaviate refused ${rejected.length} object(s), e.g. ${rejected[0]!.object.uuid}: ${rejected[0]!.message}`);
    });
  let pending: EntityObject[] = [];
  let pendingBytes = 0;
  const inFlight = new Set<Promise<void>>();
  /** Objects Weaviate refused, to be sent again (sent as soon as a request's worth gathers, and at the end). */
  const retryQueue: EntityObject[] = [];
  /** Times Weaviate refused an object (see maxObjectRetries). */
  const refusals = new WeakMap<EntityObject, number>();
  let failure: Error | undefined;

  const send = (objects: EntityObject[]): void => {
    const p = sendRequest(objects)
      .catch((err: Error) => {
        failure ??= err;
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  /** One request, retried with backoff while Weaviate cannot take it (the request failed, or the cluster could not). */
  const insert = async (objects: EntityObject[], firstAttempt: number): Promise<Map<number, string>> => {
    for (let attempt = firstAttempt; ; attempt++) {
      counters.sent += objects.length;
      try {
        return await options.writer.insert(objects);
      } catch (err) {
        await unavailable(objects.length, attempt, (err as Error).message, err);
      }
    }
  };

  /** Waits before another try, or fails the stream once Weaviate has stayed unable to take the objects. */
  const unavailable = async (count: number, attempt: number, message: string, cause?: unknown): Promise<void> => {
    if (attempt >= options.requestRetries) {
      const down = (await options.unhealthyNodes?.().catch(() => [])) ?? [];
      throw new EmbatchError('WEAVIATE_DOWN', `Weaviate could not take ${count} object(s) after ${attempt + 1} attempts: ${message}${down.length ? `. Nodes not healthy: ${down.join(', ')}` : ''}. Everything acknowledged so far is recorded; rerun \`embatch index\` when Weaviate is back and it sends exactly the rest`, { cause });
    }
    counters.requestRetries++;
    const wait = Math.min(250 * 2 ** attempt, 10_000) * (0.75 + Math.random() / 2);
    options.log?.(`Weaviate could not take ${count} object(s) (${message}); trying again in ${(wait / 1000).toFixed(1)} s`);
    await sleep(wait);
  };

  const sendRequest = async (input: EntityObject[]): Promise<void> => {
    // Weaviate keeps only the last copy of an id repeated in one request; send each id once.
    const byUuid = new Map<string, EntityObject>();
    for (const o of input) byUuid.set(o.uuid, o);
    let objects = [...byUuid.values()];
    counters.requests++;
    for (let attempt = 0; objects.length; attempt++) {
      const errors = await insert(objects, attempt);
      const acked: EntityObject[] = [];
      const refused: Array<{ object: EntityObject; message: string }> = [];
      const transient: EntityObject[] = [];
      let transientMessage = '';
      objects.forEach((o, i) => {
        const error = errors.get(i);
        if (error === undefined) acked.push(o);
        else if (isTransientObjectError(error)) {
          // The cluster could not take it now (a node away, too few replicas): not the object's fault.
          transient.push(o);
          transientMessage = error;
        } else {
          const tries = (refusals.get(o) ?? 0) + 1;
          refusals.set(o, tries);
          if (tries <= options.maxObjectRetries) {
            counters.objectRetries++;
            retryQueue.push(o);
          } else {
            counters.rejected++;
            refused.push({ object: o, message: error });
          }
        }
      });
      counters.acked += acked.length;
      // Outside the request's retries: a failure to record them is the store's, never a reason to send them again.
      await onAcked(acked);
      if (refused.length) await onRejected(refused);
      if (retryQueue.length >= options.batchSize) send(retryQueue.splice(0, options.batchSize));
      if (transient.length) await unavailable(transient.length, attempt, transientMessage);
      objects = transient;
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
        // Objects Weaviate refused and not yet sent again get their retries once the stream has been sent.
        while (retryQueue.length) {
          await sleep(200);
          while (retryQueue.length) {
            send(retryQueue.splice(0, options.batchSize));
            await drain(options.concurrency - 1);
          }
          await drain(0);
        }
      };
      finish().then(() => callback(), callback);
    },
  });
}

/**
 * Per-object errors that say the cluster could not take the object now, not that the object is bad: a node
 * unreachable or restarting, too few replicas for the consistency level, a timeout, a shard not ready. Such objects
 * are retried with backoff (and the command fails, naming the message, if the cluster stays unable), never reported
 * as rejected. Messages as Weaviate 1.3x words them (usecases/replica, usecases/sharding).
 */
const TRANSIENT_OBJECT_ERROR =
  /resolve node name|node .* (not found|unavailable|is down)|connection refused|connection reset|broken pipe|no such host|i\/o timeout|context deadline exceeded|deadline exceeded|timed? ?out|cannot achieve consistency level|not enough replicas|too few replicas|replica.*(unavailable|not reachable)|shard .*(not ready|not found|shutting down|read-?only)|unavailable|status code:? 5\d\d|internal server error|EOF$/i;

export function isTransientObjectError(message: string): boolean {
  return TRANSIENT_OBJECT_ERROR.test(message);
}
