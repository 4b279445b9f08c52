/**
 * Exact cl100k_base token counts (the tokenizer of every OpenAI embedding model; gpt-tokenizer, the fastest measured
 * here). Special-token text such as "<|endoftext|>" is counted as ordinary text, which is what the embeddings endpoint
 * does with it.
 */
import { countTokens, isWithinTokenLimit } from 'gpt-tokenizer/encoding/cl100k_base';

const asText = { disallowedSpecial: new Set<string>() };

/** A UTF-16 unit is at most 3 UTF-8 bytes and a token at least one byte: a text this short cannot exceed `limit`. */
export function mayExceed(text: string, limit: number): boolean {
  return text.length * 3 > limit;
}

/** The exact token count of `text`, or -1 as soon as it passes `limit`. */
export function countWithin(text: string, limit: number): number {
  if (!mayExceed(text, limit)) return countTokens(text, asText);
  const n = isWithinTokenLimit(text, limit, asText);
  return n === false ? -1 : n;
}
