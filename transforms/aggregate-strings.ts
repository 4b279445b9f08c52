import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import type { ExtractedBatch } from './extract-strings.js';

/**
 * The distinct strings of one batch of rows, with their occurrences, in first-seen order. Flat
 * typed arrays, so a batch crosses to the ingest worker as a few memory copies rather than an object per string.
 */
export interface DistinctBatch {
  texts: string[];
  /** Embed field index where texts[i] was first seen, and its occurrences there (up to 65,536 embed fields). */
  firstField: Uint16Array;
  count: Uint32Array;
  /** Occurrences in other fields (rare): flat triples of text index, field index, occurrences. */
  more: number[];
  /** Input line where texts[i] was first seen (0: not known). */
  lines: Uint32Array;
}

/** Folds one batch's occurrences into its distinct strings: most repeats (roles, genres) end here. */
export function aggregateBatch(batch: ExtractedBatch): DistinctBatch {
  const index = new Map<string, number>();
  const texts: string[] = [];
  const firstField: number[] = [];
  const count: number[] = [];
  const lines: number[] = [];
  const more = new Map<number, number>(); // text index * 65,536 + field -> occurrences
  for (let i = 0; i < batch.texts.length; i++) {
    const text = batch.texts[i]!;
    const field = batch.fields[i]!;
    const at = index.get(text);
    if (at === undefined) {
      index.set(text, texts.length);
      texts.push(text);
      firstField.push(field);
      count.push(1);
      lines.push(batch.lines[i] ?? 0);
    } else if (field === firstField[at]) count[at]!++;
    else more.set(at * 65_536 + field, (more.get(at * 65_536 + field) ?? 0) + 1);
  }
  const flat: number[] = [];
  for (const [k, n] of more) flat.push(Math.floor(k / 65_536), k % 65_536, n);
  // Field indexes were bytes once, and wrapped above 255 embed fields (the 300th field counted as the 44th).
  return { texts, firstField: Uint16Array.from(firstField), count: Uint32Array.from(count), more: flat, lines: Uint32Array.from(lines) };
}

/**
 * Batches of extracted strings to their distinct strings with counts, on the main thread: most repeats end here, so
 * fewer strings cross to the ingest worker. Their store keys (xxh3) are the worker's to make: the main thread, which
 * parses the CSV, is the slower side (at 1M rows the worker waited ~5 s for batches with the keys made here).
 */
export function aggregateStrings(): Transform {
  return new Transform({
    ...BATCH_STREAM,
    transform(batch: ExtractedBatch, _enc, callback) {
      callback(null, aggregateBatch(batch));
    },
  });
}
