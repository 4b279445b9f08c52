import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { countWithin, mayExceed } from '../src/tokens.js';
import type { NewString } from '../src/types.js';

export interface CountTokensOptions {
  /** Counts above this are reported as -1 (over the limit) without counting further. */
  limit: number;
  /** One in this many strings that cannot be over the limit is counted exactly; the others are estimated from it. */
  sampleEvery?: number;
}

/**
 * Sets `tokens` on every new string: exactly where the count decides something, estimated where it only feeds totals.
 *
 * A string that may be over the limit (see mayExceed) is counted exactly, -1 past it, for the token guard. No other
 * string can be over it, so its count only adds up into file totals and the cost estimate: one in `sampleEvery` (at random) is
 * counted exactly, the rest get their UTF-8 byte count times the tokens-per-byte ratio of the exact counts so far in
 * their field (one running ratio for all fields came out 1% high: the mix of fields drifts over a file),
 * and are marked `estimated`. Exact tokenizing of every string cost more CPU than parsing the CSV (1.6 s against
 * 1.9 s at 200k rows); `submit` counts each file exactly before it enqueues it (see batches.ts).
 */
export function countTokens(options: CountTokensOptions): Transform {
  const { limit } = options;
  const every = options.sampleEvery ?? 16;
  /** Exact tokens and bytes sampled, per field: fields differ in tokens per byte, and their mix drifts over a file. */
  const sampled = new Map<string, { tokens: number; bytes: number }>();
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
        if (!sample) sampled.set(s.field, (sample = { tokens: 0, bytes: 0 }));
        if (!sample.bytes || Math.random() * every < 1) {
          s.tokens = countWithin(s.text, limit);
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
