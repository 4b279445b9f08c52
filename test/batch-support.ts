/**
 * The batch lifecycle tests' shared set-up: a simulator on a free port per test, and the CLI pointed at it through the
 * environment (the real SDK over HTTP, as a user's runs).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { startSimulator, type SimulatorOptions } from '../src/simulator/server.js';
import { runCli, tempDir, until } from './helpers.js';

export const KEY = 'sk-embatch-test-9f8e7d6c5b4a';

/** A simulator on a free port for one test, and a CLI runner pointed at it through the environment. */
export async function setup(t: Parameters<typeof tempDir>[0], options: Omit<SimulatorOptions, 'dir'> = {}) {
  const work = tempDir(t);
  const sim = await startSimulator({ dir: path.join(tempDir(t), 'sim'), apiKey: KEY, ...options, engine: { validatingSeconds: 0.2, finalizingSeconds: 0.2, linesPerSecond: 2000, ...options.engine } });
  t.after(() => sim.close());
  const env = { OPENAI_BASE_URL: sim.baseURL, OPENAI_API_KEY: KEY };
  const cli = async (args: string[], extraEnv: Record<string, string> = {}) => runCli([...args, '--work-dir', work], { env: { ...env, ...extraEnv } });
  /**
   * Runs a command with --json; it must exit with `code` (1: it ended with strings failed, see exitOnLedger; null: a
   * step in a loop whose failures depend on the round, either 0 or 1).
   */
  const json = async (args: string[], extraEnv: Record<string, string> = {}, code: 0 | 1 | null = 0) => {
    const r = await cli([...args, '--json'], extraEnv);
    if (code === null) assert.ok(r.code === 0 || r.code === 1, r.stderr);
    else assert.equal(r.code, code, r.stderr);
    return JSON.parse(r.stdout);
  };
  const client = new OpenAI({ apiKey: KEY, baseURL: sim.baseURL });
  return { work, sim, cli, json, client };
}

export async function allBatches(client: OpenAI) {
  const out = [];
  for await (const b of client.batches.list({ limit: 100 })) out.push(b);
  return out;
}

/** custom_ids of every successful line in the results folder. */
export function embeddedIds(work: string): string[] {
  const dir = path.join(work, 'results');
  return readdirSync(dir)
    .filter((n) => n.startsWith('batch_results_'))
    .flatMap((n) => readFileSync(path.join(dir, n), 'utf8').split('\n').filter(Boolean))
    .map((l) => JSON.parse(l))
    .filter((l) => l.response?.status_code === 200)
    .map((l) => l.custom_id as string);
}

/** A batch test's wait for a state, asked of the CLI (each ask starts a process: every 300 ms). */
export const untilState = <T>(fn: () => Promise<T>, ok: (v: T) => boolean): Promise<T> => until(fn, ok, 120_000, 300);

