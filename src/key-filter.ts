/** 16 MiB: about 0.2% false positives at 8.5 million keys (4M catalog rows), 40% at 40 million (still correct). */
const FILTER_BYTES = 16 * 1024 * 1024;
/** 512-bit blocks: one key's probes stay in one cache line (and one memory page). */
const BLOCK_WORDS = 16;
const PROBES = 8;

/**
 * A fixed-size blocked Bloom filter of string store keys, given as their hash words (see readKeyWords): answers
 * "certainly absent" or "maybe present". The keys are already uniform hashes (xxh3-128), so their bits are the
 * filter's positions: no hashing again. Its size is fixed, so memory stays the same however many keys go in; past ~10
 * million keys more answers are "maybe", never a wrong "absent". Pages are zero until touched, so a small run costs
 * little.
 */
export class KeyFilter {
  readonly #words: Uint32Array;
  readonly #blockMask: number;

  constructor(bytes = FILTER_BYTES) {
    this.#words = new Uint32Array(bytes / 4);
    this.#blockMask = this.#words.length / BLOCK_WORDS - 1;
    if (!Number.isInteger(Math.log2(this.#blockMask + 1))) throw new RangeError('KeyFilter size must be a power of two times 64 bytes');
  }

  /** Adds the key whose hash words are at `at` in `keyWords`. */
  add(keyWords: Uint32Array, at: number): void {
    this.#probe(keyWords, at, true);
  }

  /** False when the key was certainly never added. */
  mayHave(keyWords: Uint32Array, at: number): boolean {
    return this.#probe(keyWords, at, false);
  }

  /** The key's bits: set them, or tell whether all are set. */
  #probe(keyWords: Uint32Array, at: number, set: boolean): boolean {
    const words = this.#words;
    const block = (keyWords[at]! & this.#blockMask) * BLOCK_WORDS;
    const a = keyWords[at + 1]!;
    const b = keyWords[at + 2]! | 1;
    for (let i = 0; i < PROBES; i++) {
      const bit = (a + i * b) & 511;
      const w = block + (bit >>> 5);
      const mask = 1 << (bit & 31);
      if (set) words[w]! |= mask;
      else if ((words[w]! & mask) === 0) return false;
    }
    return true;
  }
}
