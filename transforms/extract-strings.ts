import { Transform } from 'node:stream';
import { BATCH_STREAM } from './batch-items.js';
import { InputError, UsageError } from '../src/errors.js';
import { countSkip, type CsvRecord, type IngestCounters } from '../src/types.js';

export interface ExtractOptions {
  file: string;
  embedFields: string[];
  /** Column names when the input has no header row. */
  columns: string[] | null;
  header: boolean;
  nullValues: string[];
  normalize: 'none' | 'NFC' | 'NFD' | 'NFKC' | 'NFKD';
  trim: boolean;
  counters: IngestCounters;
}

/**
 * The strings of one batch of rows, in row order: texts[i] was found in embed_fields[fields[i]] on line lines[i].
 * Fields travel as small indexes, not names.
 */
export interface ExtractedBatch {
  texts: string[];
  fields: number[];
  lines: (number | undefined)[];
}

/**
 * Batches of CSV records to the strings to embed: one per configured field whose value is not a null token. Text is
 * kept byte for byte unless normalisation or trimming is configured. The header row (if any) maps field names to
 * column positions.
 */
export function extractStrings(options: ExtractOptions): Transform {
  const nulls = new Set(options.nullValues);
  // Most values are longer than every null token: compared by length first, they are not looked up in the set.
  const longestNull = Math.max(0, ...options.nullValues.map((v) => v.length));
  const isNull = (value: string) => value.length <= longestNull && nulls.has(value);
  const form = options.normalize === 'none' ? undefined : options.normalize;
  let columnIndexes: number[] | undefined = options.header ? undefined : resolveColumns(options, options.columns ?? []);
  const { counters } = options;

  return new Transform({
    ...BATCH_STREAM,
    transform(records: CsvRecord[], _enc, callback) {
      let start = 0;
      if (!columnIndexes) {
        const header = records[0];
        if (!header) return callback();
        try {
          columnIndexes = resolveColumns(options, header);
        } catch (err) {
          return callback(err as Error);
        }
        start = 1;
      }
      const out: ExtractedBatch = { texts: [], fields: [], lines: [] };
      for (let r = start; r < records.length; r++) {
        const record = records[r]!;
        counters.rows++;
        for (let f = 0; f < columnIndexes.length; f++) {
          let value = record[columnIndexes[f]!];
          if (value === undefined || isNull(value)) {
            countSkip(counters, 'null_value');
            continue;
          }
          if (options.trim || form) {
            if (options.trim) value = value.trim();
            if (form) value = value.normalize(form);
            // Trimmed to nothing: counted as empty (below), not as the null token ''.
            if (value !== '' && isNull(value)) {
              countSkip(counters, 'null_value');
              continue;
            }
          }
          if (value === '') {
            countSkip(counters, 'empty');
            continue;
          }
          counters.stringsSeen++;
          out.texts.push(value);
          out.fields.push(f);
          out.lines.push(record.line);
        }
      }
      callback(null, out.texts.length ? out : undefined);
    },
    flush(callback) {
      // An empty file has no header to say which columns are which: most likely the wrong file, or one cut short.
      if (!columnIndexes) return callback(new InputError('INPUT_EMPTY', options.file, undefined, 'the file is empty: no header row (input.header: true expects one)'));
      callback();
    },
  });
}

function resolveColumns(options: ExtractOptions, header: string[]): number[] {
  const names = header.map((h, i) => (i === 0 ? h.replace(/^\uFEFF/, '') : h));
  return options.embedFields.map((field) => {
    const first = names.indexOf(field);
    if (first === -1)
      throw new UsageError('INPUT_NO_COLUMN', `${options.file}:1: embed_fields names column "${field}", which the ${options.header ? 'header' : 'input.columns list'} lacks (columns: ${names.join(', ')})`);
    if (names.indexOf(field, first + 1) !== -1)
      throw new UsageError('INPUT_DUPLICATE_COLUMN', `${options.file}:1: column "${field}" appears twice in the header, so which one to embed is ambiguous`);
    return first;
  });
}
