import { STRING_HASH_OFFSET } from './store.js';

/** 16 MiB: about 0.2% false positives at 8.5 million keys (4M catalog rows), 40% at 40 million (still correct). */
const FILTER_BYTES = 16 * 1024 * 1024;
/** 512-bit blocks: one key's probes stay in one cache line (and one memory page). */
const BLOCK_WORDS = 16;
const PROBES = 8;

/**
 * A fixed-size blocked Bloom filter of string store keys: answers "certainly absent" or "maybe present". The keys are
 * already uniform hashes (xxh3-128), so their bits are the filter's positions: no hashing again. Its size is fixed, so
 * memory stays the same however many keys go in; past ~10 million keys more answers are "maybe", never a wrong
 * "absent". Pages are zero until touched, so a small run costs little.
 */
export class KeyFilter {
  readonly #words: Uint32Array;
  readonly #blockMask: number;

  constructor(bytes = FILTER_BYTES) {
    this.#words = new Uint32Array(bytes / 4);
    this.#blockMask = this.#words.length / BLOCK_WORDS - 1;
    if (!Number.isInteger(Math.log2(this.#blockMask + 1))) throw new RangeError('KeyFilter size must be a power of two times 64 bytes');
  }

  /** Adds the key (a store key, see stringKey) at `offset` in `keys`. */
  add(keys: Uint8Array, offset = 0): void {
    this.#probe(keys, offset, true);
  }

  /** False when the key was certainly never added. */
  mayHave(keys: Uint8Array, offset = 0): boolean {
    return this.#probe(keys, offset, false);
  }

  /** The key's bits: set them, or tell whether all are set. */
  #probe(keys: Uint8Array, offset: number, set: boolean): boolean {
    const words = this.#words;
    const h = offset + STRING_HASH_OFFSET;
    const block = (word(keys, h) & this.#blockMask) * BLOCK_WORDS;
    const a = word(keys, h + 4);
    const b = word(keys, h + 8) | 1;
    for (let i = 0; i < PROBES; i++) {
      const bit = (a + i * b) & 511;
      const at = block + (bit >>> 5);
      const mask = 1 << (bit & 31);
      if (set) words[at]! |= mask;
      else if ((words[at]! & mask) === 0) return false;
    }
    return true;
  }
}

/** 32 bits at `at` (any byte order will do: the bits are uniform), read without Buffer's checked accessors. */
function word(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}
