/**
 * `prepare`: CSV (file or stdin) to deduplicated Batch API request files, in constant memory. Nothing is sent anywhere.
 *
 *   bytes -> count -> decode -> parse CSV -> batch rows -> extract strings -> dedup (LevelDB) -> count tokens (worker)
 *         -> guard token limit -> format request lines -> write rolling request files
 */
import { createReadStream, createWriteStream, statSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { batchItems } from '../transforms/batch-items.js';
import { countBytes } from '../transforms/count-bytes.js';
import { countTokens } from '../transforms/count-tokens.js';
import { decodeText } from '../transforms/decode-text.js';
import { dedupStrings } from '../transforms/dedup-strings.js';
import { extractStrings } from '../transforms/extract-strings.js';
import { formatRequests } from '../transforms/format-requests.js';
import { guardTokens } from '../transforms/guard-tokens.js';
import { parseCsv, type RejectedRow } from '../transforms/parse-csv.js';
import { cleanRequestDir, writeRequestFiles } from '../transforms/write-request-files.js';
import type { Config } from './config.js';
import { InputError } from './errors.js';
import { estimateCost } from './models.js';
import { createProgress } from './progress.js';
import { StateStore } from './store.js';
import { newCounters, type IngestCounters } from './types.js';
import { workPaths } from './workdir.js';

/** Rows per batch after the parser: per-batch costs (LevelDB, worker messages) vanish at this size (streams-perf §2.5). */
const ROWS_PER_BATCH = 2000;

export interface PrepareOptions {
  /** A file path, or "-" for standard input. */
  input: string;
  /** Name under which stdin's counts are kept (default "stdin"); a file's is its absolute path. */
  sourceName?: string | undefined;
  stdin?: Readable;
  showProgress: boolean;
}

export interface PrepareSummary {
  input: string;
  rows: number;
  rowsRejected: number;
  stringsSeen: number;
  distinctStrings: number;
  alreadyKnown: number;
  newStrings: number;
  skipped: Record<string, number>;
  requestLines: number;
  filesWritten: string[];
  tokens: number;
  estimatedCostUsd: { batch: number | null; realtime: number | null };
  rejectsFile: string | null;
  workDir: string;
  elapsedSeconds: number;
  peakRssMB: number;
}

export async function prepare(config: Config, options: PrepareOptions): Promise<PrepareSummary> {
  const started = performance.now();
  const paths = workPaths(config.work_dir);
  const fromStdin = options.input === '-';
  const file = fromStdin ? '<stdin>' : path.resolve(options.input);
  let size: number | undefined;
  if (!fromStdin) {
    try {
      size = statSync(file).size;
    } catch (err) {
      throw new InputError('INPUT_NOT_FOUND', file, undefined, 'cannot read the input file (does it exist?)', { cause: err });
    }
  }

  const store = await StateStore.open(config.work_dir);
  const counters: IngestCounters = newCounters();
  let rejects: WriteStream | undefined;
  const firstSeq = store.nextSeq;
  try {
    await cleanRequestDir(paths.requests, store.nextSeq);
    const run = await store.beginRun(fromStdin ? options.sourceName ?? 'stdin' : file);
    const source = fromStdin ? options.stdin ?? process.stdin : createReadStream(file, { highWaterMark: 64 * 1024 });
    const progress = createProgress({ label: 'prepare', total: size, unit: 'bytes', enabled: options.showProgress });
    const onReject = (reject: RejectedRow) => {
      counters.rowsRejected++;
      rejects ??= createWriteStream(paths.rejects, { flags: 'a', mode: 0o600 });
      rejects.write(JSON.stringify({ run: run.id, ...reject }) + '\n');
    };

    await pipeline(
      source,
      countBytes((bytes) => progress.update(bytes, `${counters.newStrings.toLocaleString('en-US')} new strings`)),
      decodeText(file, config.input.encoding),
      parseCsv({ file, delimiter: config.input.delimiter, quote: config.input.quote, escape: config.input.escape, onMalformedRow: config.input.on_malformed_row, onReject }),
      batchItems(ROWS_PER_BATCH),
      extractStrings({
        file,
        embedFields: config.embed_fields,
        columns: config.input.columns,
        header: config.input.header,
        nullValues: config.input.null_values,
        normalize: config.input.normalize,
        trim: config.input.trim,
        counters,
      }),
      dedupStrings({ store, run: run.id, source: run.source, embedFields: config.embed_fields, counters }),
      countTokens({ limit: config.max_input_tokens }),
      guardTokens({ limit: config.max_input_tokens, policy: config.over_long_inputs, counters }),
      formatRequests({ model: config.model, encodingFormat: config.encoding_format, dimensions: config.dimensions }),
      writeRequestFiles({ store, dir: paths.requests, maxLines: Math.min(config.max_requests_per_file, config.batch_embedding_size), maxBytes: config.max_file_bytes, model: config.model, run: run.id, counters }),
    );
    progress.stop();
    await store.finishRun(run);

    const filesWritten: string[] = [];
    for await (const f of store.requestFiles(firstSeq)) filesWritten.push(path.join(paths.requests, f.name));
    const cost = estimateCost(config.model, counters.tokens);
    return {
      input: file,
      rows: counters.rows,
      rowsRejected: counters.rowsRejected,
      stringsSeen: counters.stringsSeen,
      distinctStrings: counters.distinct,
      alreadyKnown: counters.known,
      newStrings: counters.newStrings,
      skipped: counters.skipped,
      requestLines: counters.requestLines,
      filesWritten,
      tokens: counters.tokens,
      estimatedCostUsd: { batch: cost.batchUsd, realtime: cost.realtimeUsd },
      rejectsFile: counters.rowsRejected ? paths.rejects : null,
      workDir: config.work_dir,
      elapsedSeconds: (performance.now() - started) / 1000,
      peakRssMB: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    const r = rejects as WriteStream | undefined;
    if (r) await new Promise<void>((resolve) => r.end(resolve));
    await store.close();
  }
}
