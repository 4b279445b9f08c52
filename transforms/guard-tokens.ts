import { decode, encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { countWithin } from '../src/tokens.js';
import { countSkip, type IngestCounters, type NewString } from '../src/types.js';

export interface GuardOptions {
  limit: number;
  /** 'skip' leaves an over-long string out (recorded with its reason); 'truncate' embeds its first `limit` tokens. */
  policy: 'skip' | 'truncate';
  counters: IngestCounters;
}

/** Applies the per-input token limit to strings the counting stage marked as over it (tokens === -1). */
export function guardTokens(options: GuardOptions): Transform {
  const { limit, policy, counters } = options;
  return new Transform({
    ...BATCH_STREAM,
    transform(batch: NewString[], _enc, callback) {
      for (const s of batch) {
        if (s.tokens !== -1) continue;
        if (policy === 'skip') {
          s.skip = 'too_long';
          countSkip(counters, 'too_long');
        } else {
          s.text = truncateToTokens(s.text, limit);
          delete s.json;
          s.tokens = countWithin(s.text, limit);
          countSkip(counters, 'truncated_not_skipped');
        }
      }
      callback(null, batch);
    },
  });
}

/** The longest prefix of whole tokens within the limit that decodes to complete characters. */
export function truncateToTokens(text: string, limit: number): string {
  const asText = { disallowedSpecial: new Set<string>() };
  const tokens = encode(text, asText);
  for (let keep = limit; keep > 0; keep--) {
    const prefix = decode(tokens.slice(0, keep));
    // A cut inside a multi-byte character decodes to U+FFFD; re-encoding may also merge differently, so check both.
    if (!prefix.endsWith('\uFFFD') && countWithin(prefix, limit) !== -1) return prefix;
  }
  return '';
}
