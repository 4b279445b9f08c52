/**
 * The ledger: every distinct string the work directory has seen is in exactly one state, and the states add up to the
 * total. Read from counters the store keeps as it writes (skips, failures by request file, objects by target) and the
 * request files' job records (one per 50,000 strings): no scan of strings or marks, so it stays cheap at 31M strings.
 *
 *   skipped            never sent: over-long, empty, refused by configuration, or no longer in any source
 *   pending            in a request file not yet in a live batch
 *   submitted          in a batch that runs (or ended, not yet downloaded), or a real-time run that stopped midway
 *   embedded           vector downloaded; not all of its objects acknowledged by the target yet
 *   indexed            every object acknowledged by the target (counted once the file carrying its vector has
 *                      been taken whole by the target: `embatch index`)
 *   failed_retryable   failed for a reason worth another try (`embatch retry`), including those queued in a retry file
 *   failed_permanent   refused by the API, or out of retry attempts
 */
import { createReadStream } from 'node:fs';
import split2 from 'split2';
import { customIdOf, parseCustomId } from '../transforms/format-requests.js';
import type { JobState, StateStore } from './store.js';

export interface StringLedger {
  total: number;
  skipped: number;
  pending: number;
  submitted: number;
  embedded: number;
  indexed: number;
  failed_retryable: number;
  failed_permanent: number;
}

export interface ObjectLedger {
  /** The sink target the figures are for (see sinkLabel). */
  target: string;
  /** Objects the downloaded vectors make (one per string and field it occurs in), as of each file's last count. */
  total: number;
  /** Acknowledged by the target. */
  indexed: number;
  /** Refused by the target for good, and not acknowledged since (`embatch index --retry-rejects`). */
  refused: number;
}

export interface Ledger {
  strings: StringLedger;
  objects: ObjectLedger;
}

const PENDING: ReadonlySet<JobState> = new Set(['queued', 'uploaded', 'creating']);

/** The ledger for sink target `targetLabel`; `maxAttempts` is the retry limit past which a failure is permanent. */
export async function readLedger(store: StateStore, targetLabel: string, maxAttempts: number): Promise<Ledger> {
  const counts = store.ledgerCounts();
  const target = store.findTarget(targetLabel);
  const strings: StringLedger = { total: counts.skipped, skipped: counts.skipped, pending: 0, submitted: 0, embedded: 0, indexed: 0, failed_retryable: 0, failed_permanent: 0 };
  const failedIn = new Map<number, number>();
  for (const [seq, t] of counts.failedBy) {
    let retryable = 0;
    let exhausted = 0;
    t.r.forEach((n, attempts) => (attempts > maxAttempts ? (exhausted += n) : (retryable += n)));
    strings.failed_permanent += t.p + exhausted;
    strings.failed_retryable += retryable;
    failedIn.set(seq, t.p + retryable + exhausted);
  }
  const objectTally = target === undefined ? { a: 0, r: 0 } : counts.objects(target);
  const objects: ObjectLedger = { target: targetLabel, total: 0, indexed: objectTally.a, refused: objectTally.r };
  let downloaded = 0;
  let objectless = 0;
  for await (const [file, job] of store.requestFilesWithJobs()) {
    if (job.state === 'downloaded' && job.outputFile) {
      objects.total += job.objects ?? job.outputLines ?? 0;
      objectless += job.objectless ?? 0;
      if (target !== undefined && job.indexedTo?.includes(target)) strings.indexed += (job.outputLines ?? 0) - (job.objectless ?? 0) - (job.refusedStrings?.[target] ?? 0);
    }
    if (file.retry) continue; // its strings are counted with the files they were prepared in
    strings.total += file.inputs;
    const live = file.inputs - (failedIn.get(file.seq) ?? 0);
    if (PENDING.has(job.state)) strings.pending += live;
    else if (job.state === 'downloaded') downloaded += live;
    else strings.submitted += live;
  }
  strings.skipped += objectless;
  strings.embedded = downloaded - strings.indexed - objectless;
  return { strings, objects };
}

/**
 * Counts the objects a result file makes (one per string and field it occurs in) and its strings that make none, for
 * the ledger. Reads the custom_ids only, and the strings' records in slices.
 */
export async function countObjects(store: StateStore, resultFile: string): Promise<{ objects: number; objectless: number }> {
  const out = { objects: 0, objectless: 0 };
  let ids: number[] = [];
  const flush = async () => {
    for (const found of await store.readStrings(ids.splice(0))) {
      if (!found) continue;
      const fields = Object.keys(store.frequencies(found.record)).length;
      out.objects += fields;
      if (!fields) out.objectless++;
    }
  };
  for await (const customId of createReadStream(resultFile).pipe(split2('\n', customIdOf))) {
    const parsed = parseCustomId(customId as string);
    if (parsed && ids.push(parsed.id) >= 1000) await flush();
  }
  await flush();
  return out;
}

/**
 * What keeps a command that went as far as `stage` from ending with exit code 0, each with its next step: strings
 * failed (for good; or, before indexing, for any reason), and objects the target has not acknowledged.
 */
export function ledgerProblems(l: Ledger, stage: 'embedded' | 'indexed'): string[] {
  const out: string[] = [];
  const n = (x: number) => x.toLocaleString('en-US');
  const { strings: s, objects: o } = l;
  if (s.failed_permanent) out.push(`${n(s.failed_permanent)} string(s) failed for good (refused by the API, or out of retries): \`embatch retry\` lists them with the API's messages`);
  if (stage === 'embedded' && s.failed_retryable) out.push(`${n(s.failed_retryable)} string(s) failed for a reason worth another try: \`embatch retry\`, then \`embatch submit\``);
  if (stage === 'indexed') {
    if (o.refused) out.push(`${n(o.refused)} object(s) refused by ${o.target}: the reasons are in index_rejects.jsonl; fix the cause, then \`embatch index --retry-rejects\``);
    else if (s.embedded) out.push(`${n(s.embedded)} embedded string(s) are not all in ${o.target} yet: \`embatch index\``);
  }
  return out;
}
