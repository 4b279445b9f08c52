import { CsvError, Parser, type Options } from 'csv-parse';
import type { TransformCallback } from 'node:stream';
import { InputError } from '../src/errors.js';
import type { CsvRecord } from '../src/types.js';

export interface ParseCsvOptions {
  file: string;
  delimiter: string;
  quote: string;
  escape: string;
  /** 'stop' fails on the first malformed row; 'skip' hands it to onReject and goes on. */
  onMalformedRow: 'stop' | 'skip';
  onReject?: (reject: RejectedRow) => void;
}

export interface RejectedRow {
  file: string;
  line: number;
  code: string;
  reason: string;
}

/**
 * Text to CSV records (arrays of cells), RFC 4180: quoted multi-line fields, doubled quotes, CRLF or LF. Strict about
 * quotes and column counts, since relaxing them hides broken rows. Each record carries the input line it starts on,
 * worked out from the newlines inside its fields and the empty lines skipped before it (per-record `info` objects
 * cost 20-30% of parse time here, and the parser's own line counter depends on where chunks happen to end).
 */
export function parseCsv(options: ParseCsvOptions): Parser {
  const csvOptions: Options = {
    delimiter: options.delimiter,
    quote: options.quote,
    escape: options.escape,
    bom: true,
    // Both line ends, in any mix: files joined from several sources often have some of each, and csv-parse would
    // otherwise take the first line's for the whole file and read the other as part of a field.
    record_delimiter: ['\r\n', '\n'],
    skip_empty_lines: true,
    relax_column_count: false,
    relax_quotes: false,
  };
  if (options.onMalformedRow === 'skip') csvOptions.skip_records_with_error = true;
  const parser = new LineStampingParser(csvOptions, options.file);
  if (options.onMalformedRow === 'skip') {
    let lastLine = -1;
    // The parser reads its options at construction; on_skip is looked up when a row fails, so it can be set here.
    parser.options.on_skip = (err) => {
      if (!err) return undefined;
      const line = Number(err.lines);
      parser.resyncAfter(line);
      // One broken row can raise several errors (a stray quote, then a wrong column count): report it once.
      if (line === lastLine) return undefined;
      lastLine = line;
      options.onReject?.({ file: options.file, line, code: err.code, reason: err.message });
      return undefined;
    };
  }
  return parser;
}

class LineStampingParser extends Parser {
  readonly #file: string;
  /** The line the next record starts on, before counting empty lines skipped in between. */
  #nextLine = 1;
  #lastEmpty = 0;

  constructor(options: Options, file: string) {
    super(options);
    this.#file = file;
  }

  /** A skipped row ended on `line`: the next record starts after it. */
  resyncAfter(line: number): void {
    this.#nextLine = Math.max(this.#nextLine, line + 1);
    this.#lastEmpty = this.info.empty_lines;
  }

  override push(record: unknown, encoding?: BufferEncoding): boolean {
    if (record !== null && Array.isArray(record)) {
      const { empty_lines } = this.info;
      const start = this.#nextLine + (empty_lines - this.#lastEmpty);
      let inner = 0;
      for (const field of record as string[]) for (let i = field.indexOf('\n'); i !== -1; i = field.indexOf('\n', i + 1)) inner++;
      (record as CsvRecord).line = start;
      this.#nextLine = start + inner + 1;
      this.#lastEmpty = empty_lines;
    }
    return super.push(record, encoding);
  }

  override _transform(chunk: Buffer | string, encoding: BufferEncoding, callback: TransformCallback): void {
    super._transform(chunk, encoding, (err?: Error | null) => callback(err ? toInputError(this.#file, err) : err));
  }

  override _flush(callback: TransformCallback): void {
    super._flush((err?: Error | null) => callback(err ? toInputError(this.#file, err) : err));
  }
}

function toInputError(file: string, err: Error): Error {
  if (!(err instanceof CsvError)) return err;
  return new InputError(err.code, file, Number(err.lines), `malformed CSV: ${err.message.replace(/ on line \d+$/, '')} (set input.on_malformed_row: skip to record such rows in rejects.jsonl and go on)`, { cause: err });
}
