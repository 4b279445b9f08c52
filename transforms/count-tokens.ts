import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { Worker } from 'node:worker_threads';
import type { TokenReply, TokenRequest } from '../src/token-worker.js';
import type { NewString } from '../src/types.js';

export interface CountTokensOptions {
  /** Counts above this are reported as -1 (over the limit) without counting further. */
  limit: number;
  /** Batches in flight to the worker; enough to keep it busy while the main thread works on the next batch. */
  inFlight?: number;
}

/**
 * Sets `tokens` on every new string (-1 where over the limit), counted in a worker thread. Batches stay in order; at
 * most `inFlight` wait in the worker at once, so a slow tokenizer slows the source instead of filling memory.
 */
export function countTokens(options: CountTokensOptions): Transform {
  const worker = new Worker(new URL('../src/token-worker.js', import.meta.url), { workerData: { tokenWorker: true } });
  worker.unref();
  const pending = new Map<number, (reply: TokenReply) => void>();
  let workerError: Error | undefined;
  worker.on('message', (reply: TokenReply) => {
    pending.get(reply.seq)?.(reply);
    pending.delete(reply.seq);
  });
  worker.on('error', (err) => {
    workerError = err;
    for (const resolve of pending.values()) resolve({ seq: -1, counts: new Int32Array() });
  });

  let seq = 0;
  const queue: Array<Promise<NewString[]>> = [];
  const maxInFlight = options.inFlight ?? 4;

  const submit = (batch: NewString[]): Promise<NewString[]> =>
    new Promise((resolve, reject) => {
      const id = seq++;
      pending.set(id, (reply) => {
        if (workerError) return reject(new Error(`token counting failed: ${workerError.message}`, { cause: workerError }));
        batch.forEach((s, i) => (s.tokens = reply.counts[i]!));
        resolve(batch);
      });
      worker.postMessage({ seq: id, texts: batch.map((s) => s.text), limit: options.limit } satisfies TokenRequest);
    });

  const stage = new Transform({
    ...BATCH_STREAM,
    transform(batch: NewString[], _enc, callback) {
      const result = submit(batch);
      result.catch(() => {}); // awaited below, in order; this only keeps an early failure from being "unhandled"
      queue.push(result);
      if (queue.length < maxInFlight) return callback();
      queue.shift()!.then((done) => callback(null, done), callback);
    },
    flush(callback) {
      Promise.all(queue.splice(0)).then(
        (rest) => {
          for (const done of rest) this.push(done);
          callback();
        },
        callback,
      );
    },
    destroy(err, callback) {
      void worker.terminate();
      callback(err);
    },
  });
  stage.on('end', () => void worker.terminate());
  return stage;
}
