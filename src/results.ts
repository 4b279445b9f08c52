/**
 * The results side: result JSONL (downloaded, stored, or piped in) to objects in Weaviate or a JSONL sink.
 *
 *   bytes -> parse-results -> batch-items -> decode-results -> build-objects (LevelDB) -> upsert-weaviate | write-objects-jsonl
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { WeaviateClient } from 'weaviate-client';
import { batchItems, tapBatches } from '../transforms/batch-items.js';
import { buildObjects, type EntityObject } from '../transforms/build-objects.js';
import { decodeResults, type FailedLine } from '../transforms/decode-results.js';
import { parseResults, type ParsedLine } from '../transforms/parse-results.js';
import { parseCustomId } from '../transforms/format-requests.js';
import { newUpsertCounters, upsertWeaviate, type UpsertCounters } from '../transforms/upsert-weaviate.js';
import { writeObjectsJsonl } from '../transforms/write-objects-jsonl.js';
import type { Config } from './config.js';
import { UsageError } from './errors.js';
import { log } from './log.js';
import { expectedDimensions } from './models.js';
import type { FailureRecord, JobRecord, StateStore } from './store.js';
import { workPaths } from './workdir.js';

/**
 * Result lines per batch through the stages. Small batches keep little alive across young-generation collections:
 * 50k base64 lines replayed in 2.5 s at 500 per batch, 1.95 s at 200, 1.78 s at 100, 1.72 s at 50, 2.0 s at 25
 * (and 5 alternating runs against the floor: 78% at 100, 82% at 50). The Weaviate sink regroups objects into its own
 * batch_size.
 */
const LINES_PER_BATCH = 50;

export type SinkSpec = { kind: 'weaviate' } | { kind: 'jsonl'; path: string | null };

export function parseSink(spec: string | undefined): SinkSpec {
  if (spec === undefined || spec === 'weaviate') return { kind: 'weaviate' };
  if (spec === 'jsonl' || spec === 'jsonl:-') return { kind: 'jsonl', path: null };
  if (spec.startsWith('jsonl:')) return { kind: 'jsonl', path: spec.slice('jsonl:'.length) };
  throw new UsageError('USAGE', `--sink takes weaviate, jsonl (stdout) or jsonl:<path>, not "${spec}"`);
}

export interface IndexSummary {
  files: number;
  /** Every non-blank line read: each is either an embedded line or a failed line (by reason). */
  lines: number;
  embeddedLines: number;
  objects: number;
  acked: number;
  rejected: number;
  alreadyIndexed: number;
  /** Objects the target refused for good on an earlier run, not sent again (see --retry-rejects). */
  alreadyRejected: number;
  failedLines: Record<string, number>;
  requestRetries: number;
  objectRetries: number;
  rejectsFile: string | null;
  sink: string;
  elapsedSeconds: number;
  peakRssMB: number;
}

/** Where the objects of a sink go, as a target label: indexed marks belong to one target (see StateStore.targetId). */
export function sinkLabel(spec: SinkSpec, config: Config): string {
  if (spec.kind === 'jsonl') return spec.path ? `jsonl:${path.resolve(spec.path)}` : 'jsonl:stdout';
  return `weaviate:${config.weaviate.url}/${config.weaviate.collection}`;
}

/** What a sink's stage reports to: counters, and the objects the target took or refused for good. */
interface SinkReport {
  counters: UpsertCounters;
  acked(objects: EntityObject[]): Promise<void>;
  refused(rejected: Array<{ object: EntityObject; message: string }>): Promise<void>;
}

/** An open sink: a factory for the last stage of each file's pipeline, and how to close it. */
interface Sink {
  stage(report: SinkReport): Writable;
  close(): Promise<void>;
}

async function openSink(spec: SinkSpec, config: Config): Promise<Sink> {
  if (spec.kind === 'jsonl') {
    const out: NodeJS.WritableStream = spec.path ? createWriteStream(spec.path, { flags: 'a', mode: 0o600 }) : process.stdout;
    return {
      stage: (report) =>
        writeObjectsJsonl(out, config.encoding_format, async (objects) => {
          report.counters.sent += objects.length;
          report.counters.acked += objects.length;
          await report.acked(objects);
        }),
      close: async () => {
        if (spec.path) await new Promise<void>((resolve) => (out as WriteStream).end(() => resolve()));
      },
    };
  }
  const { connectWeaviate, ensureCollection } = await import('./weaviate.js');
  const { openObjectWriter } = await import('./weaviate-writer.js');
  const client: WeaviateClient = await connectWeaviate(config);
  let writer: Awaited<ReturnType<typeof openObjectWriter>>;
  try {
    await ensureCollection(client, config, expectedDimensions(config.model, config.dimensions));
    writer = await openObjectWriter(config);
  } catch (err) {
    await client.close();
    throw err;
  }
  const w = config.weaviate;
  return {
    stage: (report) =>
      upsertWeaviate({
        writer,
        batchSize: w.batch_size,
        maxBatchBytes: w.max_batch_bytes,
        concurrency: w.concurrency,
        maxObjectRetries: w.max_object_retries,
        requestRetries: w.request_retries,
        counters: report.counters,
        // A (string, field) is marked indexed only once Weaviate has acknowledged it.
        onAcked: report.acked,
        // Refused by Weaviate after its retries: recorded with the server's message, never dropped silently.
        onRejected: report.refused,
        log: (m) => log.warn(m),
        unhealthyNodes: async () => (await client.cluster.nodes()).filter((n) => n.status !== 'HEALTHY').map((n) => `${n.name} (${n.status})`),
      }),
    close: async () => {
      writer.close();
      await client.close();
    },
  };
}

export interface IndexInput {
  /** A path, or "-" for standard input. */
  path: string;
  stdin?: Readable;
}

/**
 * One file of an index run that ended whole (a failed request throws instead): every object of it was acknowledged or
 * refused for good, and `rejected` says how many were refused, now or on an earlier run (then not sent again).
 */
export interface FileOutcome {
  rejected: number;
  /** What the file makes (see JobRecord): objects, strings that make none, strings with an object refused. */
  objects: number;
  objectless: number;
  refusedStrings: number;
}

/**
 * Indexes result files one after another into one sink. With skipIndexed (the index command), objects the sink's
 * target already took are not sent again (nor those it refused for good, unless `retryRejects`), so a rerun after a
 * failure goes on from where it stopped. Replay sends everything again.
 */
export async function indexFiles(
  config: Config,
  store: StateStore,
  inputs: Iterable<IndexInput> | AsyncIterable<IndexInput>,
  spec: SinkSpec,
  opts: { skipIndexed: boolean; retryRejects?: boolean; afterFile?: (input: IndexInput, outcome: FileOutcome) => Promise<void> },
): Promise<IndexSummary> {
  const started = performance.now();
  const paths = workPaths(config.work_dir);
  const counters = newUpsertCounters();
  const label = sinkLabel(spec, config);
  const target = await store.targetId(label);
  const summary: IndexSummary = { files: 0, lines: 0, embeddedLines: 0, objects: 0, acked: 0, rejected: 0, alreadyIndexed: 0, alreadyRejected: 0, failedLines: {}, requestRetries: 0, objectRetries: 0, rejectsFile: null, sink: label, elapsedSeconds: 0, peakRssMB: 0 };
  let rejects: WriteStream | undefined;
  const reject = (record: Record<string, unknown>) => {
    rejects ??= createWriteStream(paths.indexRejects, { flags: 'a', mode: 0o600 });
    summary.rejectsFile = paths.indexRejects;
    rejects.write(JSON.stringify(record) + '\n');
  };
  // Failed lines with a known string go where `embatch retry` looks for them, in slices as they come.
  let failures: FailedLine[] = [];
  let failureWrites: Promise<void> = Promise.resolve();
  const flushFailures = () => {
    const slice = failures.splice(0);
    const known = slice.flatMap((f) => {
      const p = f.customId ? parseCustomId(f.customId) : undefined;
      return p ? [[p.id, { customId: f.customId!, seq: 0, code: f.code, message: f.reason, retryable: f.retryable }] as [number, Omit<FailureRecord, 'attempts' | 'retrySeq'>]] : [];
    });
    failureWrites = failureWrites.then(() => store.addFailures(known));
    failureWrites.catch(() => {}); // awaited after each file; this only keeps an early failure from being "unhandled"
    return failureWrites;
  };
  // Acknowledged objects are recorded in slices of 5,000 (and at the end of each file, and when the run stops): one
  // LevelDB write per 50-line batch made a JSONL replay of 50,000 lines 25-35% slower. A mark lost to a crash only
  // means the object is sent again, which every target takes as the same object.
  let ackedPairs: Array<[number, string, number]> = [];
  const flushAcked = async () => {
    const slice = ackedPairs;
    ackedPairs = [];
    await store.markIndexed(target, slice);
  };
  const report = {
    counters,
    acked: async (objects: EntityObject[]) => {
      for (const o of objects) ackedPairs.push([o.stringId, o.field, o.properties.frequency]);
      if (ackedPairs.length >= 5000) await flushAcked();
    },
    refused: async (refused: Array<{ object: EntityObject; message: string }>) => {
      for (const { object: o } of refused) refusedIds.add(o.stringId);
      for (const { object: o, message } of refused) reject({ code: 'weaviate_rejected', target: label, uuid: o.uuid, stringId: o.stringId, field: o.field, reason: message, at: new Date().toISOString() });
      await store.markRejected(target, refused.map(({ object: o }) => [o.stringId, o.field]));
    },
  };

  /** The current file's strings with an object refused (now or before): at most its lines. */
  const refusedIds = new Set<number>();
  const sink = await openSink(spec, config);
  try {
    for await (const input of inputs) {
      const source = input.path === '-' ? input.stdin ?? process.stdin : createReadStream(input.path, { highWaterMark: 256 * 1024 });
      const name = input.path === '-' ? '<stdin>' : input.path;
      let lines = 0;
      const rejectedBefore = counters.rejected;
      let refusedEarlier = 0;
      let objects = 0;
      let objectless = 0;
      refusedIds.clear();
      await pipeline(
        source,
        parseResults(name),
        batchItems(LINES_PER_BATCH),
        tapBatches<ParsedLine[]>((batch) => (lines += batch.length)),
        decodeResults({ dimensions: expectedDimensions(config.model, config.dimensions) }),
        buildObjects({
          store,
          ...(opts.skipIndexed ? { skipIndexed: { target, retryRejects: opts.retryRejects === true } } : {}),
          onFailed: (f) => {
            summary.failedLines[f.code] = (summary.failedLines[f.code] ?? 0) + 1;
            reject({ ...f, at: new Date().toISOString() });
            if (f.code !== 'corrupt_line' && f.code !== 'unknown_custom_id' && failures.push(f) >= 5000) void flushFailures();
          },
          onSkipped: (acked, refused) => {
            summary.alreadyIndexed += acked;
            summary.alreadyRejected += refused.length;
            refusedEarlier += refused.length;
            for (const id of refused) refusedIds.add(id);
          },
          onMapped: (n, made, none) => {
            summary.embeddedLines += n;
            objects += made;
            objectless += none;
          },
        }),
        tapBatches<EntityObject[]>((objects) => (summary.objects += objects.length)),
        sink.stage(report),
      );
      await flushFailures();
      await flushAcked();
      summary.files++;
      summary.lines += lines;
      await opts.afterFile?.(input, { rejected: counters.rejected - rejectedBefore + refusedEarlier, objects, objectless, refusedStrings: refusedIds.size });
    }
  } finally {
    await flushFailures().catch(() => {});
    // What the target acknowledged before a failure is recorded, so a rerun goes on from there.
    await flushAcked().catch(() => {});
    await sink.close();
    const r = rejects as WriteStream | undefined;
    if (r) await new Promise<void>((resolve) => r.end(() => resolve()));
  }
  summary.acked = counters.acked;
  summary.rejected = counters.rejected;
  summary.requestRetries = counters.requestRetries;
  summary.objectRetries = counters.objectRetries;
  summary.elapsedSeconds = (performance.now() - started) / 1000;
  summary.peakRssMB = process.resourceUsage().maxRSS / 1024;
  return summary;
}

/**
 * Indexes every downloaded result file the sink's target has not taken whole yet (with `retryRejects`, also those
 * where it refused objects, to send those again once their cause is gone), and records each file for that target when
 * all of it is taken. Indexing into one target never hides a file from another. The files are found as indexing goes
 * (never listed whole: a work directory may hold thousands).
 */
export async function indexDownloaded(config: Config, store: StateStore, sink: string | undefined, opts: { retryRejects?: boolean } = {}): Promise<IndexSummary | null> {
  const dir = workPaths(config.work_dir).results;
  const spec = parseSink(sink);
  const target = await store.targetId(sinkLabel(spec, config));
  // A file is wanted again when a later prepare changed counts since the target took it: objects whose frequency
  // changed are sent again (the others are skipped by their marks).
  const generation = store.countsGeneration;
  const wanted = (job: JobRecord) =>
    !job.indexedTo?.includes(target) || (job.indexedGen?.[target] ?? 0) < generation || (opts.retryRejects === true && job.rejectsTo?.includes(target) === true);
  const pending = (async function* () {
    for await (const [file, job] of store.requestFilesWithJobs())
      if (job.state === 'downloaded' && job.outputFile && wanted(job)) yield { path: path.join(dir, job.outputFile), seq: file.seq };
  })();
  const first = await pending.next();
  if (first.done) return null;
  const inputs = (async function* () {
    yield first.value;
    yield* pending;
  })();
  return indexFiles(config, store, inputs, spec, {
    skipIndexed: true,
    retryRejects: opts.retryRejects === true,
    afterFile: async (input, outcome) => {
      const seq = (input as IndexInput & { seq: number }).seq;
      const job = await store.getJob(seq);
      if (!job) return;
      const without = (list: number[] | undefined) => (list ?? []).filter((t) => t !== target);
      await store.putJob({
        ...job,
        indexedTo: [...without(job.indexedTo), target],
        indexedGen: { ...job.indexedGen, [target]: generation },
        rejectsTo: outcome.rejected ? [...without(job.rejectsTo), target] : without(job.rejectsTo),
        objects: outcome.objects,
        objectless: outcome.objectless,
        refusedStrings: { ...job.refusedStrings, [target]: outcome.refusedStrings },
      });
    },
  });
}
