/** Records passed between pipeline stages. */

/** A CSV record: its cells, and the input line it starts on. */
export type CsvRecord = string[] & { line?: number };

/** A distinct string new to the work directory, on its way to a request line. */
export interface NewString {
  id: number;
  crc: number;
  /** The field it was first seen in (named in its custom_id). */
  field: string;
  text: string;
  /** JSON.stringify(text), made once by the stage that found the string new (the text log holds the same JSON). */
  json?: string;
  /** The input line where it was first seen, for messages. */
  line: number | undefined;
  /** Token count for the model's tokenizer, once counted (-1: over the limit). */
  tokens?: number;
  /** `tokens` is an estimate (see transforms/count-tokens.ts). */
  estimated?: true;
  /** Why it will not be embedded, if it will not. */
  skip?: string;
}

/** Counters shared by the ingest stages; the run summary is built from them. */
export interface IngestCounters {
  rows: number;
  rowsRejected: number;
  stringsSeen: number;
  distinct: number;
  known: number;
  newStrings: number;
  skipped: Record<string, number>;
  requestLines: number;
  tokens: number;
  /** The part of `tokens` that is estimated rather than counted. */
  estimatedTokens: number;
  files: number;
}

export function newCounters(): IngestCounters {
  return { rows: 0, rowsRejected: 0, stringsSeen: 0, distinct: 0, known: 0, newStrings: 0, skipped: {}, requestLines: 0, tokens: 0, estimatedTokens: 0, files: 0 };
}

/** Adds the counts of `from` into `into` (the main thread and the ingest worker each count their own stages). */
export function addCounters(into: IngestCounters, from: IngestCounters): void {
  for (const key of Object.keys(from) as Array<keyof IngestCounters>) {
    if (key === 'skipped') for (const [reason, n] of Object.entries(from.skipped)) countSkip(into, reason, n);
    else into[key] += from[key];
  }
}

export function countSkip(counters: IngestCounters, reason: string, n = 1): void {
  counters.skipped[reason] = (counters.skipped[reason] ?? 0) + n;
}
