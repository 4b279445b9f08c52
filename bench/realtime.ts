/**
 * Real-time benchmark: `embatch run --realtime` against the simulator with the account limits set (default 3,000 RPM
 * and 1,000,000 TPM, OpenAI's tier 1), printing the achieved share of the binding limit and the share of requests
 * answered 429. Target: 90% or more of the binding limit, at most 1% of requests rate-limited.
 *
 *   node dist/bench/realtime.js [strings] [--rpm N] [--tpm N]      (default 70,000 strings, about 2 minutes)
 */
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { startSimulator } from '../src/simulator/server.js';
import { benchWorkDir, CLI, ROOT } from './make-results.js';

const args = process.argv.slice(2);
const flag = (name: string, d: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : d);
const strings = Number(args.find((a, i) => /^\d+$/.test(a) && !args[i - 1]?.startsWith('--')) ?? 70_000);
const rpm = flag('--rpm', 3000);
const tpm = flag('--tpm', 1_000_000);
const dir = path.join(ROOT, '.tmp', 'bench-realtime');
const source = await benchWorkDir(dir, strings);
// Each run embeds from a fresh copy of the prepared work directory.
const work = path.join(dir, 'run');
rmSync(work, { recursive: true, force: true });
execFileSync('cp', ['-r', source, work]);

const sim = await startSimulator({ dir: path.join(dir, 'sim'), limits: { rpm, tpm } });
try {
  // Asynchronously: the simulator answers from this process's event loop.
  const { stdout: out } = await promisify(execFile)(process.execPath, [CLI, 'run', '--realtime', '--sink', 'none', '--json', '--work-dir', work, '--config', path.join(ROOT, 'config.yml'), '--set', `realtime.rpm=${rpm}`, '--set', `realtime.tpm=${tpm}`], {
    env: { ...process.env, OPENAI_BASE_URL: sim.baseURL, OPENAI_API_KEY: 'sk-bench' },
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  const r = JSON.parse(out).realtime;
  const minutes = r.elapsedSeconds / 60;
  const tokenShare = r.tokens / minutes / tpm;
  const requestShare = r.requests / minutes / rpm;
  const binding = tokenShare >= requestShare ? 'tokens per minute' : 'requests per minute';
  const limited = (sim.stats.rate_limited ?? 0) / Math.max(1, (sim.stats.rate_limited ?? 0) + (sim.stats.embeddings_ok ?? 0));
  console.log(`\n${r.embedded.toLocaleString('en-US')} strings, ${r.tokens.toLocaleString('en-US')} tokens in ${r.requests} requests, ${r.elapsedSeconds.toFixed(1)} s; limits ${rpm.toLocaleString('en-US')} RPM, ${tpm.toLocaleString('en-US')} TPM`);
  console.log(`achieved        ${Math.round(r.tokens / minutes).toLocaleString('en-US')} tokens/min (${(100 * tokenShare).toFixed(1)}% of TPM), ${Math.round(r.requests / minutes).toLocaleString('en-US')} requests/min (${(100 * requestShare).toFixed(1)}% of RPM)`);
  console.log(`binding limit   ${binding}: ${(100 * Math.max(tokenShare, requestShare)).toFixed(1)}% of it used (target: 90% or more)`);
  console.log(`answered 429    ${sim.stats.rate_limited ?? 0} of ${(sim.stats.rate_limited ?? 0) + (sim.stats.embeddings_ok ?? 0)} requests (${(100 * limited).toFixed(2)}%; target: at most 1%)`);
} finally {
  await sim.close();
}
