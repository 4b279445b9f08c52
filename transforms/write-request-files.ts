import { createHash, type Hash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { open, readdir, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { renameDurably } from '../src/durable.js';
import { BATCH_STREAM } from './batch-items.js';
import type { RequestFile, SkipRecord, StateStore } from '../src/store.js';
import type { IngestCounters } from '../src/types.js';
import type { RequestBatch } from './format-requests.js';

/** OpenAI's per-batch caps for /v1/embeddings: lines, and embedding inputs summed over all lines. */
export const BATCH_MAX_LINES = 50_000;
export const BATCH_MAX_INPUTS = 50_000;

/** What this stage needs of the store: the id watermark, the next file number, and the commit of a written file. */
export type RequestFileStore = Pick<StateStore, 'committedId' | 'nextSeq' | 'commit'>;

export interface WriteRequestFilesOptions {
  store: RequestFileStore;
  dir: string;
  maxLines: number;
  maxBytes: number;
  model: string;
  run: number;
  counters: IngestCounters;
  /**
   * Retry files carry strings that already have ids: they are recorded with `retry: true`, the id watermark stays
   * where it is, and `onRetryFile` gets the ids each file holds.
   */
  onRetryFile?: (file: RequestFile, ids: number[]) => Promise<void>;
}

export const requestFileName = (seq: number) => `batch_requests_${String(seq).padStart(6, '0')}.jsonl`;
const partialName = (seq: number) => `.${requestFileName(seq)}.partial`;

interface OpenFile {
  ids: number[];
  seq: number;
  handle: FileHandle;
  hash: Hash;
  lines: number;
  bytes: number;
  tokens: number;
  estimatedTokens: number;
  firstId: number;
}

/**
 * Writes request lines into `batch_requests_<seq>.jsonl` files, starting a new one at maxLines lines, maxBytes bytes
 * or 50,000 inputs. A file is written under a temporary name, flushed to disk and renamed when complete; only then is
 * it recorded in the store, together with the id watermark (see store.ts), so a half-written file never looks complete.
 */
export function writeRequestFiles(options: WriteRequestFilesOptions): Writable {
  const { store, dir, counters } = options;
  const maxLines = Math.min(options.maxLines, BATCH_MAX_LINES, BATCH_MAX_INPUTS);
  let current: OpenFile | undefined;
  let lastId = store.committedId - 1;
  let skipped: Array<[number, SkipRecord]> = [];

  const openFile = async (firstId: number): Promise<OpenFile> => {
    const seq = store.nextSeq;
    const handle = await open(path.join(dir, partialName(seq)), 'w', 0o600);
    return { ids: [], seq, handle, hash: createHash('sha256'), lines: 0, bytes: 0, tokens: 0, estimatedTokens: 0, firstId };
  };

  const finishFile = async (file: OpenFile): Promise<void> => {
    await file.handle.sync();
    await file.handle.close();
    const name = requestFileName(file.seq);
    // Durable before the store records it: a committed request file survives a power cut.
    await renameDurably(path.join(dir, partialName(file.seq)), path.join(dir, name));
    const record: RequestFile = {
      seq: file.seq,
      name,
      lines: file.lines,
      inputs: file.lines,
      tokens: file.tokens,
      ...(file.estimatedTokens ? { tokensEstimated: true } : {}),
      bytes: file.bytes,
      sha256: file.hash.digest('hex'),
      firstId: file.firstId,
      lastId,
      model: options.model,
      createdAt: new Date().toISOString(),
      run: options.run,
      ...(options.onRetryFile ? { retry: true } : {}),
    };
    if (options.onRetryFile) await options.onRetryFile(record, file.ids);
    else await store.commit(lastId + 1, record, skipped);
    skipped = [];
    counters.files++;
  };

  /** Writes a batch's bytes from `start` to `end` (whole lines) to the open file. */
  const writeLines = async (bytes: Buffer, start: number, end: number) => {
    if (start === end || !current) return;
    const lines = bytes.subarray(start, end);
    await current.handle.write(lines);
    current.hash.update(lines);
  };

  const writeBatch = async ({ bytes, items }: RequestBatch): Promise<void> => {
    /** Where the batch's lines not yet written to a file start, and where the next line starts. */
    let pending = 0;
    let at = 0;
    for (const item of items) {
      if (item.bytes === undefined) {
        skipped.push([item.id, { reason: item.skip ?? 'unknown', field: item.field, tokens: item.tokens }]);
        lastId = item.id;
        continue;
      }
      if (current && (current.lines >= maxLines || current.bytes + item.bytes > options.maxBytes)) {
        // The line goes to the next file.
        await writeLines(bytes, pending, at);
        pending = at;
        await finishFile(current);
        current = undefined;
      }
      current ??= await openFile(item.id);
      at += item.bytes;
      current.lines++;
      current.bytes += item.bytes;
      current.tokens += item.tokens;
      if (item.estimated) {
        current.estimatedTokens += item.tokens;
        counters.estimatedTokens += item.tokens;
      }
      if (options.onRetryFile) current.ids.push(item.id);
      counters.requestLines++;
      counters.tokens += item.tokens;
      lastId = item.id;
    }
    await writeLines(bytes, pending, at);
  };

  return new Writable({
    ...BATCH_STREAM,
    write(batch: RequestBatch, _enc, callback) {
      writeBatch(batch).then(() => callback(), callback);
    },
    final(callback) {
      const done = async () => {
        if (current) await finishFile(current);
        else if (!options.onRetryFile && (skipped.length || lastId + 1 > store.committedId)) await store.commit(lastId + 1, null, skipped);
        current = undefined;
      };
      done().then(() => callback(), callback);
    },
    destroy(err, callback) {
      // Leave the partial file: the next run removes it (see cleanRequestDir).
      void current?.handle.close().catch(() => {});
      callback(err);
    },
  });
}

/**
 * Removes what a dead run left in the request directory: partial files, and complete-looking files the store never
 * recorded (renamed, then the process died before the commit).
 */
export async function cleanRequestDir(dir: string, nextSeq: number): Promise<void> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const name of await readdir(dir)) {
    const m = /^\.?batch_requests_(\d+)\.jsonl(\.partial)?$/.exec(name);
    if (m && (m[2] || Number(m[1]) >= nextSeq)) await rm(path.join(dir, name), { force: true });
  }
}
