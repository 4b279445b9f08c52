/**
 * `embatch verify`: the Weaviate collection against the store's indexed marks for that target, in constant memory.
 *
 *   1. The collection is read page by page with Weaviate's cursor (`fetchObjects` with `after`, as the client's
 *      iterator does; the iterator itself asks for 100 objects per object returned, so it is not used). Each object is
 *      tied to its string through its hash_value (one batched store read per page) and checked: its id is
 *      uuid5(hash_value, field), its original_string hashes to its hash_value, its field is one the string occurs in,
 *      its frequency is the store's. Objects whose string this work directory never wrote are only counted (`extra`).
 *      Every object found is noted in a scratch LevelDB (on disk: 45M ids do not fit in memory).
 *   2. The store's marks for the target are read in order; those not noted are `missing`.
 *
 * Every finding goes to <work_dir>/verify.jsonl as it is found. With `repair`, missing and differing objects lose
 * their marks and are sent again from the stored result files (the index path, sending only unmarked objects); objects
 * found in the collection without a mark (`unrecorded`: acknowledged, but the mark was lost) are marked.
 */
import { createWriteStream, mkdtempSync, rmSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { Level } from 'level';
import { objectUuid } from '../transforms/build-objects.js';
import type { Config } from './config.js';
import { UsageError } from './errors.js';
import { indexFiles, parseSink, sinkLabel, type IndexInput, type IndexSummary } from './results.js';
import { STRING_HASH_OFFSET, stringKey, stringKeyOfHash, type StateStore } from './store.js';
import { PROPERTIES, connectWeaviate, type EntityProperties } from './weaviate.js';
import { workPaths } from './workdir.js';

/** Objects per cursor page. */
const PAGE = 1000;

export interface VerifySummary {
  target: string;
  /** Objects read from the collection. */
  objects: number;
  /** Acknowledged objects of this work directory found with the right id and properties. */
  matching: number;
  /** Marked as acknowledged in the store, not in the collection. */
  missing: number;
  /** In the collection with an id or properties other than the store says. */
  differs: number;
  /** In the collection, right, but not marked in the store (a mark lost before it was written). */
  unrecorded: number;
  /** In the collection, of strings this work directory never wrote: counted only. */
  extra: number;
  /** Where each finding is, one JSON line each. */
  findingsFile: string;
  repaired: { resent: number; marked: number; index: IndexSummary | null } | null;
  elapsedSeconds: number;
  peakRssMB: number;
}

export async function verify(config: Config, store: StateStore, opts: { repair: boolean; sink?: string }): Promise<VerifySummary> {
  const started = performance.now();
  const spec = parseSink(opts.sink);
  if (spec.kind !== 'weaviate') throw new UsageError('USAGE', 'verify reads a Weaviate collection: --sink weaviate (the default)');
  const label = sinkLabel(spec, config);
  const target = opts.repair ? await store.targetId(label) : store.findTarget(label);
  const findingsFile = path.join(workPaths(config.work_dir).root, 'verify.jsonl');
  const findings = createWriteStream(findingsFile, { mode: 0o600 });
  const note = (finding: Record<string, unknown>) => findings.write(JSON.stringify(finding) + '\n');
  const s: VerifySummary = { target: label, objects: 0, matching: 0, missing: 0, differs: 0, unrecorded: 0, extra: 0, findingsFile, repaired: null, elapsedSeconds: 0, peakRssMB: 0 };
  const scratchDir = mkdtempSync(path.join(workPaths(config.work_dir).root, '.verify-'));
  const seen = new Level<string, string>(scratchDir, { valueEncoding: 'utf8', compression: false });
  /** (string id, field) objects to send again, and acknowledged ones to mark: written as found, in slices. */
  const toResend: Array<[number, string]> = [];
  const toMark: Array<[number, string, number]> = [];
  const resendOrigins = new Set<number>();
  let resent = 0;
  let markedNow = 0;
  const flushRepairs = async () => {
    if (!opts.repair || target === undefined) return;
    const resend = toResend.splice(0);
    resent += resend.length;
    for (const [id] of resend) resendOrigins.add(store.originOf(id));
    await store.unmarkIndexed(target, resend);
    const mark = toMark.splice(0);
    markedNow += mark.length;
    await store.markIndexed(target, mark);
  };
  try {
    const client = await connectWeaviate(config);
    try {
      if (await client.collections.exists(config.weaviate.collection)) {
        const collection = client.collections.get<EntityProperties>(config.weaviate.collection).withConsistency(config.weaviate.consistency_level);
        let after: string | undefined;
        for (;;) {
          const page = (await collection.query.fetchObjects({ limit: PAGE, after, returnProperties: [...PROPERTIES] })).objects;
          if (!page.length) break;
          after = page.at(-1)!.uuid;
          s.objects += page.length;
          await checkPage(page);
          await flushRepairs();
        }
      }
    } finally {
      await client.close();
    }
    // Pass 2: marks the collection did not show.
    if (target !== undefined) {
      let slice: Array<[number, number]> = [];
      const flush = async () => {
        const found = await seen.getMany(slice.map(([id, field]) => `${id}:${field}`));
        slice.forEach(([id, field], i) => {
          if (found[i] !== undefined) return;
          s.missing++;
          note({ kind: 'missing', stringId: id, field: store.fieldName(field) });
          toResend.push([id, store.fieldName(field)]);
        });
        slice = [];
        await flushRepairs();
      };
      for await (const pair of store.marksOf(target)) if (slice.push(pair) >= PAGE) await flush();
      await flush();
    }
  } finally {
    await seen.close();
    rmSync(scratchDir, { recursive: true, force: true });
    await new Promise<void>((resolve) => findings.end(() => resolve()));
  }
  if (opts.repair) s.repaired = { resent, marked: markedNow, index: resent ? await resend(config, store, resendOrigins) : null };
  s.elapsedSeconds = (performance.now() - started) / 1000;
  s.peakRssMB = process.resourceUsage().maxRSS / 1024;
  return s;

  async function checkPage(page: Array<{ uuid: string; properties: Partial<EntityProperties> }>): Promise<void> {
    const hashes = page.map((o) => (typeof o.properties.hash_value === 'string' && /^[0-9a-f]{32}$/.test(o.properties.hash_value) ? o.properties.hash_value : undefined));
    const known = hashes.flatMap((h, i) => (h ? [i] : []));
    const keys = known.map((i) => stringKeyOfHash(hashes[i]!));
    const records = await store.lookupStrings(keys);
    const checked: Array<{ o: (typeof page)[number]; id: number; field: number }> = [];
    const notes: Array<[string, string]> = [];
    known.forEach((i, j) => {
      const record = records[j];
      const o = page[i]!;
      if (!record) return;
      const p = o.properties;
      const field = typeof p.field_type === 'string' ? store.findFieldId(p.field_type) : undefined;
      const frequency = field === undefined ? undefined : store.frequencies(record)[p.field_type!];
      const problems: string[] = [];
      if (frequency === undefined) problems.push(`field_type ${JSON.stringify(p.field_type)} is not a field the string occurs in`);
      else {
        if (o.uuid !== objectUuid(hashes[i]!, p.field_type!)) problems.push('id is not uuid5(hash_value, field_type)');
        if (p.frequency !== frequency) problems.push(`frequency ${String(p.frequency)}, the store says ${frequency}`);
      }
      if (typeof p.original_string !== 'string' || stringKey(p.original_string).toString('hex', STRING_HASH_OFFSET) !== hashes[i]) problems.push('original_string does not hash to hash_value');
      if (problems.length) {
        s.differs++;
        note({ kind: 'differs', uuid: o.uuid, stringId: record.id, field: p.field_type, problems });
        if (frequency !== undefined) toResend.push([record.id, p.field_type!]);
        if (field !== undefined) notes.push([`${record.id}:${field}`, '1']);
        return;
      }
      checked.push({ o, id: record.id, field: field! });
      notes.push([`${record.id}:${field}`, '1']);
    });
    s.extra += page.length - known.length + known.filter((_, j) => !records[j]).length;
    const marked = target === undefined ? checked.map(() => false) : await store.marked(target, checked.map((c) => [c.id, c.field]));
    checked.forEach((c, i) => {
      if (marked[i]) s.matching++;
      else {
        s.unrecorded++;
        note({ kind: 'unrecorded', uuid: c.o.uuid, stringId: c.id, field: store.fieldName(c.field) });
        toMark.push([c.id, store.fieldName(c.field), c.o.properties.frequency as number]);
      }
    });
    if (notes.length) await seen.batch(notes.map(([key, value]) => ({ type: 'put' as const, key, value })));
  }
}

/**
 * Sends again, from the stored result files, every object the target's marks now lack: the index path with
 * skipIndexed, over the output files that can carry the affected strings (those prepared in `origins`, and retries).
 */
async function resend(config: Config, store: StateStore, origins: Set<number>): Promise<IndexSummary> {
  const dir = workPaths(config.work_dir).results;
  const inputs = (async function* (): AsyncGenerator<IndexInput> {
    for await (const [file, job] of store.requestFilesWithJobs())
      if (job.state === 'downloaded' && job.outputFile && (file.retry || origins.has(file.seq))) yield { path: path.join(dir, job.outputFile) };
  })();
  return indexFiles(config, store, inputs, { kind: 'weaviate' }, { skipIndexed: true });
}
