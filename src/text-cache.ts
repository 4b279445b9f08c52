/**
 * Texts of the chunks of the text log (see store.ts) read back by id, kept up to a byte budget, the least recently
 * used going first. Result lines come in no particular order (OpenAI keeps none), but one result file's strings are
 * one request file's, a few dozen chunks: with the whole of them in memory, every chunk of a file is read once
 * whatever the order of its lines. Before, four chunks were kept and a fully shuffled file read a chunk for nearly
 * every line (30,000 lines: 19.96 s against 1.08 s in request order).
 */
export class TextCache {
  /** First ids of the cached chunks, sorted, to find an id's chunk by binary search. */
  #starts: number[] = [];
  /** By first id, in order of use (a Map keeps insertion order: the first entry is the least recently used). */
  readonly #chunks = new Map<number, { texts: string[]; bytes: number }>();
  #bytes = 0;
  #last = -1;

  /** `budget`: bytes of the chunks' lines in the text log (their JSON) that may stay cached. */
  constructor(readonly budget: number) {}

  /** The text of `id` if its chunk is cached; undefined if not. */
  find(id: number): string | undefined {
    const starts = this.#starts;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid]! <= id) lo = mid + 1;
      else hi = mid - 1;
    }
    if (hi < 0) return undefined;
    const first = starts[hi]!;
    const chunk = this.#chunks.get(first)!;
    if (id - first >= chunk.texts.length) return undefined;
    if (first !== this.#last) {
      this.#chunks.delete(first);
      this.#chunks.set(first, chunk);
      this.#last = first;
    }
    return chunk.texts[id - first];
  }

  add(first: number, texts: string[], bytes: number): void {
    if (this.#chunks.has(first)) return;
    while (this.#chunks.size && this.#bytes + bytes > this.budget) {
      const [oldest, chunk] = this.#chunks.entries().next().value!;
      this.#chunks.delete(oldest);
      this.#bytes -= chunk.bytes;
      this.#starts.splice(this.#starts.indexOf(oldest), 1);
    }
    this.#chunks.set(first, { texts, bytes });
    this.#bytes += bytes;
    this.#last = first;
    let at = this.#starts.length;
    while (at > 0 && this.#starts[at - 1]! > first) at--;
    this.#starts.splice(at, 0, first);
  }

  get bytes(): number {
    return this.#bytes;
  }
}
