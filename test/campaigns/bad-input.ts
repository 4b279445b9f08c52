/**
 * Campaign 3, bad input: a corpus of broken CSVs and broken result files, plus a mutation fuzzer that corrupts the
 * fixtures at random. Every case must end with a clear error (exit 1 or 2, naming the file) or a recorded reject
 * (exit 0, counted), never a crash with a stack trace, a hang, or a silent loss (summary counts that do not add up).
 *
 *   node dist/test/campaigns/bad-input.js [--fuzz 200] [--seed 11]
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { hashEmbedding } from '../../src/simulator/embedding.js';
import { float32ToBase64 } from '../../transforms/write-objects-jsonl.js';
import { fixture, requestLines, ROOT } from '../helpers.js';
import { flag, mulberry32, runCli, type Outcome } from './harness.js';

export type Verdict = 'clear_error' | 'reject_recorded' | 'ok' | 'unclear_error' | 'crash' | 'hang' | 'silent_loss';

export interface CaseResult {
  name: string;
  kind: 'csv' | 'results';
  verdict: Verdict;
  detail: string;
}

export interface BadInputFigures {
  cases: number;
  byVerdict: Record<Verdict, number>;
  /** Cases whose verdict is a defect: crash, hang, silent loss, unclear error. */
  defects: CaseResult[];
  /** The fixed corpus, case by case (the fuzzer's cases are only counted). */
  corpus: Array<{ case: string; verdict: Verdict; detail: string }>;
  seconds: number;
}

const DIMS = 8;
const EMBED_FIELDS = 6;
const HANG_MS = 60_000;
const env = { EMBATCH_DIMENSIONS: String(DIMS) };
const STACK = /^\s+at .+(:\d+:\d+\)?|\(node:)/m;

function judge(name: string, kind: CaseResult['kind'], file: string, r: Outcome, check: (summary: Record<string, unknown>) => string | null): CaseResult {
  const out = (verdict: Verdict, detail: string): CaseResult => ({ name, kind, verdict, detail: detail.slice(0, 400) });
  if (r.hung) return out('hang', `no answer in ${HANG_MS / 1000} s`);
  if (r.signal || ![0, 1, 2].includes(r.code ?? -1) || STACK.test(r.stderr)) return out('crash', `exit ${r.code ?? r.signal}: ${r.stderr}`);
  if (r.code !== 0) return r.stderr.includes(path.basename(file)) ? out('clear_error', r.stderr.trim()) : out('unclear_error', r.stderr.trim());
  let summary: Record<string, unknown>;
  try {
    summary = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    return out('crash', `exit 0 without a JSON summary: ${r.stdout.slice(0, 200)}`);
  }
  const loss = check(summary);
  if (loss) return out('silent_loss', loss);
  const skipped = kind === 'csv' ? ((summary.skipped as Record<string, number>).too_long ?? 0) : 0;
  const rejected = (kind === 'csv' ? (summary.rowsRejected as number) : (summary.lines as number) - (summary.embeddedLines as number)) + skipped;
  return rejected > 0 ? out('reject_recorded', `${rejected} rejected or skipped with a reason`) : out('ok', '');
}

/** prepare's counts must add up: every cell a string or a counted null, every new string a request line or a counted skip. */
function prepareAddsUp(work: string) {
  return (s: Record<string, unknown>): string | null => {
    const skipped = (s.skipped ?? {}) as Record<string, number>;
    const rows = s.rows as number;
    const cells = (s.stringsSeen as number) + (skipped.null_value ?? 0) + (skipped.empty ?? 0);
    if (cells !== rows * EMBED_FIELDS) return `${rows} rows x ${EMBED_FIELDS} fields != ${cells} strings and nulls`;
    const lines = requestLines(work).length;
    if ((s.newStrings as number) !== lines + (skipped.too_long ?? 0)) return `${String(s.newStrings)} new strings != ${lines} request lines + ${skipped.too_long ?? 0} too long`;
    if (lines !== s.requestLines) return `summary says ${String(s.requestLines)} request lines, files hold ${lines}`;
    return null;
  };
}

function replayAddsUp(s: Record<string, unknown>): string | null {
  const failed = Object.values((s.failedLines ?? {}) as Record<string, number>).reduce((a, b) => a + b, 0);
  if ((s.embeddedLines as number) + failed !== s.lines) return `${String(s.lines)} lines != ${String(s.embeddedLines)} embedded + ${failed} failed`;
  return null;
}

async function csvCase(dir: string, name: string, bytes: Buffer, policy: 'stop' | 'skip'): Promise<CaseResult> {
  const file = path.join(dir, `${name}.csv`);
  const work = path.join(dir, `work-${name}-${policy}`);
  writeFileSync(file, bytes);
  const r = await runCli(['prepare', file, '--work-dir', work, '--json', '--set', `input.on_malformed_row=${policy}`], { env, hangMs: HANG_MS });
  const result = judge(`${name} (${policy})`, 'csv', file, r, prepareAddsUp(work));
  rmSync(work, { recursive: true, force: true });
  rmSync(file, { force: true });
  return result;
}

async function resultsCase(dir: string, work: string, name: string, bytes: Buffer): Promise<CaseResult> {
  const file = path.join(dir, `${name}.jsonl`);
  writeFileSync(file, bytes);
  const r = await runCli(['replay', file, '--sink', `jsonl:${path.join(dir, 'objects.jsonl')}`, '--work-dir', work, '--json'], { env, hangMs: HANG_MS });
  rmSync(file, { force: true });
  return judge(name, 'results', file, r, replayAddsUp);
}

/** A result line for a custom_id, with an embedding as given (a Float32Array goes in base64). */
function resultLine(customId: string, embedding: Float32Array | unknown): string {
  const e = embedding instanceof Float32Array ? float32ToBase64(embedding) : embedding;
  return JSON.stringify({ id: 'batch_req_1', custom_id: customId, response: { status_code: 200, request_id: 'r', body: { object: 'list', data: [{ object: 'embedding', index: 0, embedding: e }], model: 'text-embedding-3-small', usage: { prompt_tokens: 3, total_tokens: 3 } } }, error: null });
}

function csvCorpus(): Array<[string, Buffer]> {
  const header = 'identity,composite,marcKey,person,roles,title,attribution,provision,subjects,genres,relatedWork,recordId,personId';
  const row = (person: string) => `1,"Title: X\nGenres: Y",m,"${person}",Composer,Title,a,p,Subjects,Genres,NaN,1,2`;
  const b = (s: string) => Buffer.from(s);
  return [
    ['unterminated-quote', b(`${header}\n${row('Ok, A')}\n1,"Title: never closed,m,B,r,t,a,p,s,g,NaN,1,2\n${row('Ok, C')}\n`)],
    ['ragged-rows', b(`${header}\n${row('Ok, A')}\n1,2,3\n${row('Ok, B')},extra,cells\n${row('Ok, C')}\n`)],
    ['invalid-utf8', Buffer.concat([b(`${header}\n${row('Ok, A')}\n1,x,m,Bad `), Buffer.from([0xc3, 0x28, 0xff]), b(`,r,t,a,p,s,g,NaN,1,2\n`)])],
    ['nul-bytes', b(`${header}\n${row('Ok, A')}\n1,x,m,Nul\0here,r,t,a,p,s,g,NaN,1,2\n`)],
    ['50mb-field', b(`${header}\n1,"${'lorem ipsum '.repeat(4_400_000)}",m,Big,r,t,a,p,s,g,NaN,1,2\n${row('Ok, A')}\n`)],
    ['empty-file', Buffer.alloc(0)],
    ['header-only', b(`${header}\n`)],
    ['duplicate-headers', b(`${header.replace('roles', 'person')}\n${row('Ok, A')}\n`)],
    ['bom-crlf-mixed', b(`\ufeff${header}\r\n${row('Ok, A')}\n${row('Ok, B')}\r\n`)],
  ];
}

function resultsCorpus(ids: string[]): Array<[string, Buffer]> {
  const v = (i: number) => hashEmbedding(`s${i}`, DIMS);
  const good = (i: number) => resultLine(ids[i % ids.length]!, v(i));
  const b = (lines: string[]) => Buffer.from(lines.join('\n') + '\n');
  const nan = new Float32Array(DIMS).fill(0.1);
  nan[3] = Number.NaN;
  return [
    ['not-json', b([good(0), 'this is not json', good(1)])],
    ['truncated-lines', b([good(0), good(1).slice(0, 70), good(2)])],
    ['unknown-custom-ids', b([good(0), resultLine('deadbeef_person_999999', v(5)), resultLine('req-7', v(6))])],
    ['wrong-dimensions', b([good(0), resultLine(ids[1]!, new Float32Array(DIMS - 1).fill(0.2))])],
    ['nan-base64', b([good(0), resultLine(ids[1]!, nan)])],
    ['nan-float-literal', b([good(0), resultLine(ids[1]!, Array.from(nan)).replace('null', 'NaN')])],
    ['duplicated-lines', b([good(0), good(0), good(1), good(1)])],
    ['empty-file', Buffer.alloc(0)],
    ['blank-lines-only', Buffer.from('\n\n  \n\r\n')],
    ['error-lines', b([good(0), JSON.stringify({ custom_id: ids[1], response: { status_code: 500, body: { error: { message: 'boom', type: 'server_error' } } }, error: null })])],
  ];
}

/** 1-5 random edits: byte flips, inserted quotes/newlines/NULs/invalid bytes, deleted or repeated ranges, a cut. */
function mutate(bytes: Buffer, rnd: () => number): Buffer {
  let b = Buffer.from(bytes);
  const edits = 1 + Math.floor(rnd() * 5);
  const specials = [0x22, 0x0a, 0x0d, 0x2c, 0x00, 0xff, 0xc3, 0x7b, 0x7d, 0x5c];
  for (let e = 0; e < edits && b.length > 0; e++) {
    const at = Math.floor(rnd() * b.length);
    const op = Math.floor(rnd() * 5);
    if (op === 0) b[at] = Math.floor(rnd() * 256);
    else if (op === 1) b = Buffer.concat([b.subarray(0, at), Buffer.from([specials[Math.floor(rnd() * specials.length)]!]), b.subarray(at)]);
    else if (op === 2) b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + Math.floor(rnd() * 50)))]);
    else if (op === 3) b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + 1 + Math.floor(rnd() * 200)), b.subarray(at)]);
    else b = b.subarray(0, at);
  }
  return b;
}

export async function badInput(o: { dir: string; fuzz: number; seed: number; log?: (line: string) => void }): Promise<BadInputFigures> {
  const started = Date.now();
  const log = o.log ?? (() => {});
  rmSync(o.dir, { recursive: true, force: true });
  mkdirSync(o.dir, { recursive: true });
  const results: CaseResult[] = [];
  const note = (r: CaseResult) => {
    results.push(r);
    if (!['clear_error', 'reject_recorded', 'ok'].includes(r.verdict)) log(`${r.verdict}: ${r.kind} ${r.name}: ${r.detail}`);
  };

  for (const [name, bytes] of csvCorpus()) for (const policy of ['stop', 'skip'] as const) note(await csvCase(o.dir, name, bytes, policy));

  // A work directory that knows the fixture's strings, for the result-file cases.
  const work = path.join(o.dir, 'work-results');
  const prepared = await runCli(['prepare', fixture('catalog.csv'), '--work-dir', work, '--json'], { env });
  if (prepared.code !== 0) throw new Error(`prepare failed: ${prepared.stderr}`);
  const ids = requestLines(work).map((l) => l.custom_id);
  const resultCases = resultsCorpus(ids);
  for (const [name, bytes] of resultCases) note(await resultsCase(o.dir, work, name, bytes));

  const rnd = mulberry32(o.seed);
  const csvSeed = readFileSync(fixture('catalog.csv'));
  const resultsSeed = Buffer.from(ids.map((id, i) => resultLine(id, hashEmbedding(`s${i}`, DIMS))).join('\n') + '\n');
  for (let i = 0; i < o.fuzz; i++) {
    if (i % 2 === 0) note(await csvCase(o.dir, `fuzz-${i}`, mutate(csvSeed, rnd), rnd() < 0.5 ? 'stop' : 'skip'));
    else note(await resultsCase(o.dir, work, `fuzz-${i}`, mutate(resultsSeed, rnd)));
  }

  const byVerdict = { clear_error: 0, reject_recorded: 0, ok: 0, unclear_error: 0, crash: 0, hang: 0, silent_loss: 0 } as Record<Verdict, number>;
  for (const r of results) byVerdict[r.verdict]++;
  const corpus = results.filter((r) => !r.name.startsWith('fuzz-')).map((r) => ({ case: `${r.kind} ${r.name}`, verdict: r.verdict, detail: r.detail.split('\n')[0]!.slice(0, 160) }));
  return { cases: results.length, byVerdict, corpus, defects: results.filter((r) => ['unclear_error', 'crash', 'hang', 'silent_loss'].includes(r.verdict)), seconds: (Date.now() - started) / 1000 };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const figures = await badInput({ dir: path.join(ROOT, '.tmp', 'campaign-bad-input'), fuzz: flag(args, '--fuzz', 200), seed: flag(args, '--seed', 11), log: (l) => console.error(l) });
  console.log(JSON.stringify(figures, null, 2));
}
