/**
 * Worker thread: exact cl100k_base token counts (the tokenizer of every OpenAI embedding model) for batches of texts,
 * so tokenizing runs on the machine's other core while the main thread parses and deduplicates. Special-token text
 * such as "<|endoftext|>" is counted as ordinary text, which is what the embeddings endpoint does with it.
 */
import { countTokens, isWithinTokenLimit } from 'gpt-tokenizer/encoding/cl100k_base';
import { parentPort, workerData } from 'node:worker_threads';

export interface TokenRequest {
  seq: number;
  texts: string[];
  limit: number;
}
export interface TokenReply {
  seq: number;
  /** Token count per text, or -1 where it exceeds the limit. */
  counts: Int32Array;
}

const asText = { disallowedSpecial: new Set<string>() };

export function countWithin(text: string, limit: number): number {
  // A UTF-16 unit is at most 3 UTF-8 bytes and a token at least one byte: short texts cannot exceed the limit, so they
  // take the fast native counter; longer ones stop counting as soon as they pass it.
  if (text.length * 3 <= limit) return countTokens(text, asText);
  const n = isWithinTokenLimit(text, limit, asText);
  return n === false ? -1 : n;
}

// Other modules (and other workers) import countWithin from here; only the token worker answers messages.
if ((workerData as { tokenWorker?: boolean } | null)?.tokenWorker) parentPort?.on('message', (req: TokenRequest) => {
  const counts = new Int32Array(req.texts.length);
  for (let i = 0; i < req.texts.length; i++) counts[i] = countWithin(req.texts[i]!, req.limit);
  parentPort!.postMessage({ seq: req.seq, counts } satisfies TokenReply, [counts.buffer]);
});
