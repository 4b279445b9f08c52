/**
 * Power-cut campaign (RELIABILITY.md): a power cut or kernel crash keeps only what reached the disk, unlike a killed
 * process. One instrumented prepare records, at every commit, the sizes of the text log and of LevelDB's write-ahead
 * log just before the watermark write and just after its sync (EMBATCH_TEST_SYNC_RECORD). For every commit boundary
 * the finished work directory is then cut back to two states a power cut may leave (and so is the state before the
 * first commit, when nothing was synced):
 *
 *   all-lost    everything after the boundary's sync gone: the text log and LevelDB's log cut to their synced sizes,
 *               request files the store had not committed deleted;
 *   texts-lost  LevelDB's log kept up to the next commit (text pointers and string records that were never synced
 *               but reached the disk), the text log cut back to what the boundary's commit flushed (texts written
 *               after it lost), and the newest request file deleted.
 *
 * Each damaged copy must open and resume: prepare is run again over the same CSV and its request files and ledger must
 * equal a clean run's, byte for byte.
 *
 *   node dist/test/campaigns/power-cut.js [--rows N] [--per-file N]
 */
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { runCli } from '../helpers.js';
import { catalogFile, flag } from './harness.js';

interface SyncPoint {
  when: 'before' | 'after';
  committedId: number;
  nextSeq: number;
  texts: number;
  logs: Record<string, number>;
}

export interface PowerCutFigures {
  rows: number;
  requestFiles: number;
  boundaries: number;
  cuts: number;
  /** Cuts whose rerun gave exactly the clean run's request files and ledger. */
  identical: number;
  /** Cuts where the text log had lost texts that LevelDB still pointed at (the store's recovery scan ran). */
  textsLostCuts: number;
  mismatches: string[];
  seconds: number;
}

/** The request files of a work directory, by name, with their contents. */
function requestFiles(work: string): Map<string, string> {
  const dir = path.join(work, 'requests');
  return new Map(readdirSync(dir).filter((n) => n.endsWith('.jsonl') && !n.startsWith('.')).sort().map((n) => [n, readFileSync(path.join(dir, n), 'utf8')]));
}

async function prepare(work: string, csv: string, perFile: number, env: Record<string, string> = {}) {
  const r = await runCli(['prepare', csv, '--work-dir', work, '--json', '--set', `max_requests_per_file=${perFile}`], { env });
  if (r.code !== 0) throw new Error(`prepare in ${work} exited ${r.code}: ${r.stderr}`);
}

async function ledger(work: string): Promise<string> {
  const r = await runCli(['status', '--offline', '--json', '--work-dir', work]);
  if (r.code !== 0) throw new Error(`status in ${work} exited ${r.code}: ${r.stderr}`);
  return JSON.stringify(JSON.parse(r.stdout).strings);
}

/**
 * Cuts a copy of `finished` back to what a power cut may leave at a boundary (see the header): `synced` is the
 * boundary's commit, `flushed` the text log's size its fsync covered, `next` the next commit's 'before' point.
 */
function cut(finished: string, copy: string, synced: SyncPoint, flushed: number, next: SyncPoint | undefined, variant: 'all-lost' | 'texts-lost'): void {
  rmSync(copy, { recursive: true, force: true });
  cpSync(finished, copy, { recursive: true });
  truncateSync(path.join(copy, 'texts.jsonl'), variant === 'all-lost' ? synced.texts : flushed);
  const keepLogs = variant === 'all-lost' ? synced.logs : (next?.logs ?? synced.logs);
  for (const [name, size] of Object.entries(keepLogs)) truncateSync(path.join(copy, 'state', name), size);
  const after = synced;
  const requests = path.join(copy, 'requests');
  for (const name of readdirSync(requests)) {
    const seq = Number(/_(\d+)\.jsonl/.exec(name)?.[1] ?? NaN);
    // all-lost: every file the store had not committed; texts-lost: the newest one (renamed, not yet committed).
    if (variant === 'all-lost' ? seq >= after.nextSeq : seq === after.nextSeq) rmSync(path.join(requests, name));
  }
}

export async function powerCut(opts: { rows: number; perFile: number; dir: string }): Promise<PowerCutFigures> {
  const started = performance.now();
  const csv = await catalogFile(path.join(opts.dir, 'data'), opts.rows);
  const clean = path.join(opts.dir, 'clean');
  await prepare(clean, csv, opts.perFile);
  const cleanFiles = requestFiles(clean);
  const cleanLedger = await ledger(clean);

  const finished = path.join(opts.dir, 'instrumented');
  const record = path.join(opts.dir, 'sync-points.jsonl');
  await prepare(finished, csv, opts.perFile, { EMBATCH_TEST_SYNC_RECORD: record });
  const points = readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as SyncPoint);
  const befores = points.filter((p) => p.when === 'before');
  // Boundary 0 is the state before the first commit: nothing synced, the logs empty.
  const zero: SyncPoint = { when: 'after', committedId: 0, nextSeq: 1, texts: 0, logs: Object.fromEntries(Object.keys(befores[0]!.logs).map((n) => [n, 0])) };
  const afters = [zero, ...points.filter((p) => p.when === 'after')];
  // The logs the figures name are the ones on disk: no log was switched during the run (it would void the cut).
  for (const name of Object.keys(afters.at(-1)!.logs)) if (!existsSync(path.join(finished, 'state', name))) throw new Error(`LevelDB log ${name} is gone: use fewer rows`);

  const f: PowerCutFigures = { rows: opts.rows, requestFiles: cleanFiles.size, boundaries: afters.length, cuts: 0, identical: 0, textsLostCuts: 0, mismatches: [], seconds: 0 };
  const copy = path.join(opts.dir, 'cut');
  for (const [i, after] of afters.entries()) {
    // The text log as far as this boundary's commit flushed it, and the next commit's 'before' point.
    const flushed = i === 0 ? 0 : befores[i - 1]!.texts;
    const next = befores[i];
    for (const variant of ['all-lost', 'texts-lost'] as const) {
      cut(finished, copy, after, flushed, next, variant);
      f.cuts++;
      // Texts written after the flush whose pointers reached LevelDB's log: the store's recovery scan must drop them.
      if (variant === 'texts-lost' && (next?.texts ?? after.texts) > flushed) f.textsLostCuts++;
      const name = `boundary ${i} (committed ${after.committedId}), ${variant}`;
      try {
        await prepare(copy, csv, opts.perFile);
        const files = requestFiles(copy);
        const same = files.size === cleanFiles.size && [...cleanFiles].every(([n, text]) => files.get(n) === text);
        const sameLedger = (await ledger(copy)) === cleanLedger;
        if (same && sameLedger) f.identical++;
        else f.mismatches.push(`${name}: ${same ? '' : 'request files differ '}${sameLedger ? '' : 'ledger differs'}`);
      } catch (err) {
        f.mismatches.push(`${name}: ${(err as Error).message.split('\n')[0]}`);
      }
    }
  }
  rmSync(copy, { recursive: true, force: true });
  f.seconds = (performance.now() - started) / 1000;
  return f;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(path.join(tmpdir(), 'embatch-power-cut-'));
  try {
    const f = await powerCut({ rows: flag(args, '--rows', 20_000), perFile: flag(args, '--per-file', 2_000), dir });
    console.log(JSON.stringify(f, null, 2));
    if (f.mismatches.length) process.exitCode = 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
