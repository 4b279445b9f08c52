import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { countWithin, mayExceed } from '../src/tokens.js';
import type { NewString } from '../src/types.js';

export interface CountTokensOptions {
  /** Counts above this are reported as -1 (over the limit) without counting further. */
  limit: number;
  /** Past the first `exactFirst` of a field, one in this many strings that cannot be over the limit is counted exactly. */
  sampleEvery?: number;
  /** Strings of each field counted exactly before sampling starts, so a small input's estimate stands on enough counts. */
  exactFirst?: number;
}

/**
 * Sets `tokens` on every new string: exactly where the count decides something, estimated where it only feeds totals.
 *
 * A string that may be over the limit (see mayExceed) is counted exactly, -1 past it, for the token guard. No other
 * string can be over it, so its count only adds up into file totals and the cost estimate: the first `exactFirst` of
 * each field and then one in `sampleEvery` (at random) are counted exactly, the rest get their UTF-8 byte count times
 * the tokens-per-byte ratio of the exact counts so far in their field (one running ratio for all fields came out 1%
 * high: the mix of fields drifts over a file), and are marked `estimated`. Exact tokenizing of every string cost more
 * CPU than parsing the CSV (1.6 s against 1.9 s at 200k rows), and one in 16 still ~1 s of the ingest worker at 1M
 * rows; `submit` counts each file exactly before it enqueues it (see batches.ts).
 */
export function countTokens(options: CountTokensOptions): Transform {
  const { limit } = options;
  const every = options.sampleEvery ?? 64;
  // At least one exact count per field before any estimate: the estimate divides by the bytes counted.
  const exactFirst = Math.max(1, options.exactFirst ?? 1000);
  /** Exact tokens and bytes sampled, per field: fields differ in tokens per byte, and their mix drifts over a file. */
  const sampled = new Map<string, { strings: number; tokens: number; bytes: number }>();
  return new Transform({
    ...BATCH_STREAM,
    transform(batch: NewString[], _enc, callback) {
      for (const s of batch) {
        if (mayExceed(s.text, limit)) {
          s.tokens = countWithin(s.text, limit);
          continue;
        }
        const bytes = Buffer.byteLength(s.text);
        // At random, not every n-th: strings arrive in a rhythm of fields that a fixed stride could lock onto.
        let sample = sampled.get(s.field);
        if (!sample) sampled.set(s.field, (sample = { strings: 0, tokens: 0, bytes: 0 }));
        if (sample.strings < exactFirst || Math.random() * every < 1) {
          s.tokens = countWithin(s.text, limit);
          sample.strings++;
          sample.tokens += s.tokens;
          sample.bytes += bytes;
        } else {
          s.tokens = Math.round((bytes * sample.tokens) / sample.bytes);
          s.estimated = true;
        }
      }
      callback(null, batch);
    },
  });
}
