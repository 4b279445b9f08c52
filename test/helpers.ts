import { spawn } from 'node:child_process';
import { parse as parseCsvSync } from 'csv-parse/sync';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/** The project root (tests run from dist/test). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
export const fixture = (name: string) => path.join(ROOT, 'fixtures', name);

export function tempDir(t: { after: (fn: () => void) => void }, prefix = 'embatch-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI in a child process, with a clean environment (no EMBATCH_* or OpenAI variables leak in). */
export function runCli(args: string[], opts: { input?: string | Buffer; env?: Record<string, string>; cwd?: string } = {}): Promise<CliResult> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('EMBATCH_') && !k.startsWith('OPENAI_')) env[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...env, ...opts.env }, cwd: opts.cwd ?? ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.on('error', () => {}); // the child may exit before reading all of it
    child.stdin.end(opts.input ?? '');
  });
}

export function requestFiles(workDir: string): string[] {
  const dir = path.join(workDir, 'requests');
  return readdirSync(dir)
    .filter((n) => /^batch_requests_\d+\.jsonl$/.test(n))
    .sort()
    .map((n) => path.join(dir, n));
}

export interface RequestLineJson {
  custom_id: string;
  method: string;
  url: string;
  body: { model: string; input: string; encoding_format: string; dimensions?: number };
}

/** Every request line the work directory holds, parsed. */
export function requestLines(workDir: string): RequestLineJson[] {
  return requestFiles(workDir).flatMap((f) =>
    readFileSync(f, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as RequestLineJson),
  );
}

export async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

/**
 * Asks `ask` until its answer is what `ok` waits for (a file on disk, a server's count, a batch's state: something
 * outside the test's process), every `everyMs`, and returns that answer. The timeout only stops a test that would
 * otherwise hang; it is not what the test waits for. The one polling loop of the tests.
 */
export async function until<T>(ask: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs = 120_000, everyMs = 20): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await ask();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${ask.toString().slice(0, 120)}; last answer: ${JSON.stringify(v)?.slice(0, 500)}`);
    await pause(everyMs);
  }
}

/** until() for a yes-or-no condition. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  await until(cond, (yes) => yes, timeoutMs);
}

/**
 * Freezes a process with SIGSTOP and returns once every one of its threads is stopped (Linux /proc): the signal is
 * delivered asynchronously, and a thread inside a system call (an fsync) stops only when the call returns, so a
 * look at the process's work right after kill() could still change under the test.
 */
export async function freeze(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  const state = (task: string) => {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return 'T'; // the thread ended
    }
  };
  await until(() => readdirSync(`/proc/${pid}/task`).every((task) => 'Tt'.includes(state(task))), (all) => all, 60_000, 5);
}

/** The embed fields of the default configuration. */
export const DEFAULT_FIELDS = ['composite', 'person', 'title', 'roles', 'subjects', 'genres'];

/**
 * What a fixture (or a CSV at an absolute path) holds, worked out here with csv-parse alone (not through embatch's stages): every distinct string of
 * the embed fields with its count per field, and the cells that are null ("" or "NaN"). Expected values of tests that
 * run the real pipeline come from this.
 */
export function fixtureStrings(name: string, fields = DEFAULT_FIELDS): { strings: Map<string, Map<string, number>>; nullCells: number; rows: number } {
  const file = path.isAbsolute(name) ? name : fixture(name);
  const rows = parseCsvSync(readFileSync(file), { columns: true, bom: true }) as Array<Record<string, string>>;
  const strings = new Map<string, Map<string, number>>();
  let nullCells = 0;
  for (const row of rows)
    for (const field of fields) {
      const value = row[field] ?? '';
      if (value === '' || value === 'NaN') {
        nullCells++;
        continue;
      }
      const perField = strings.get(value) ?? new Map<string, number>();
      perField.set(field, (perField.get(field) ?? 0) + 1);
      strings.set(value, perField);
    }
  return { strings, nullCells, rows: rows.length };
}
