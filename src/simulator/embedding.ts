/**
 * Embeddings that mean something offline: the hashing trick over character trigrams and words. Deterministic,
 * unit length, and similar strings get similar vectors, so nearest-neighbour results can be checked without OpenAI.
 */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function hashEmbedding(text: string, dimensions: number): Float32Array {
  const v = new Float32Array(dimensions);
  const norm = text.normalize('NFC').toLowerCase();
  const padded = ` ${norm} `;
  const add = (feature: string, weight: number) => {
    const h = fnv1a(feature);
    v[h % dimensions]! += h & 0x80000000 ? -weight : weight;
  };
  for (let i = 0; i + 3 <= padded.length; i++) add(padded.slice(i, i + 3), 1);
  for (const word of norm.split(/\s+/)) if (word) add(`w:${word}`, 2);
  let sum = 0;
  for (const x of v) sum += x * x;
  const scale = sum > 0 ? 1 / Math.sqrt(sum) : 0;
  if (scale === 0) v[0] = 1;
  else for (let i = 0; i < dimensions; i++) v[i]! *= scale;
  return v;
}

/** Little-endian float32 bytes in base64, the embeddings endpoint's `encoding_format: "base64"`. */
export { float32ToBase64 as toBase64 } from '../../transforms/write-objects-jsonl.js';
