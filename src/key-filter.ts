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

/** Whether the key words (see readKeyWords) at `at` in `a` and at `bt` in `b` are the same key. */
export function sameKeyWords(a: Uint32Array, at: number, b: Uint32Array, bt: number): boolean {
  return a[at] === b[bt] && a[at + 1] === b[bt + 1] && a[at + 2] === b[bt + 2] && a[at + 3] === b[bt + 3];
}

/**
 * Keys, given as their hash words (see readKeyWords), to small numbers (the index of each key's entry elsewhere), for
 * the few thousand keys of one batch: open addressing over typed arrays, so no object or Map entry per key (the Map
 * and objects it replaces took ~0.7 s of the ingest worker at 1M rows). Sized when made; exact, unlike KeyFilter.
 */
export class KeyTable {
  readonly #words: Uint32Array;
  readonly #entries: Int32Array;
  readonly #mask: number;
  #size = 0;

  /** A table for up to `capacity` keys (kept at most half full). */
  constructor(readonly capacity: number) {
    const slots = 2 ** Math.ceil(Math.log2(Math.max(2, capacity * 2)));
    this.#words = new Uint32Array(slots * 4);
    this.#entries = new Int32Array(slots).fill(-1);
    this.#mask = slots - 1;
  }

  /** Sets the number of the key whose hash words are at `at` in `keyWords` (a key set again gets the new number). */
  set(keyWords: Uint32Array, at: number, entry: number): void {
    const slot = this.#find(keyWords, at);
    if (this.#entries[slot] === -1) {
      if (++this.#size > this.capacity) throw new RangeError(`KeyTable: more than ${this.capacity} keys`);
      this.#words.set(keyWords.subarray(at, at + 4), slot * 4);
    }
    this.#entries[slot] = entry;
  }

  /** The key's number, or -1 if it was never set. */
  get(keyWords: Uint32Array, at: number): number {
    return this.#entries[this.#find(keyWords, at)]!;
  }

  /** The key's slot, or the empty slot where it would go. */
  #find(keyWords: Uint32Array, at: number): number {
    for (let slot = keyWords[at]! & this.#mask; ; slot = (slot + 1) & this.#mask)
      if (this.#entries[slot] === -1 || sameKeyWords(this.#words, slot * 4, keyWords, at)) return slot;
  }
}
