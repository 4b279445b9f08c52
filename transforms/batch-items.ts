import { Transform } from 'node:stream';

/**
 * Stream options for stages that pass batches: two batches buffered per side is enough to keep each stage busy, while
 * the default of 16 objects would hold 16 whole batches per stage in memory.
 */
export const BATCH_STREAM = { objectMode: true, highWaterMark: 2 } as const;

/**
 * Groups single items into arrays of up to `size`, so that the stages after it pay their per-call costs (LevelDB
 * round trips, worker messages, stream hops) once per batch instead of once per item.
 */
export function batchItems<T>(size: number): Transform {
  let batch: T[] = [];
  return new Transform({
    writableObjectMode: true,
    readableObjectMode: true,
    readableHighWaterMark: BATCH_STREAM.highWaterMark,
    transform(item: T, _enc, callback) {
      batch.push(item);
      if (batch.length >= size) {
        const full = batch;
        batch = [];
        callback(null, full);
      } else callback();
    },
    flush(callback) {
      callback(null, batch.length ? batch : undefined);
    },
  });
}

/** Passes batches through unchanged, telling `see` about each (for counting). */
export function tapBatches<B>(see: (batch: B) => void): Transform {
  return new Transform({
    ...BATCH_STREAM,
    transform(batch: B, _enc, callback) {
      see(batch);
      callback(null, batch);
    },
  });
}
