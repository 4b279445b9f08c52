import { Transform } from 'node:stream';

/** Passes bytes through unchanged and reports how many went by (for progress on the input's size). */
export function countBytes(onBytes: (total: number) => void): Transform {
  let total = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, callback) {
      total += chunk.length;
      onBytes(total);
      callback(null, chunk);
    },
  });
}
