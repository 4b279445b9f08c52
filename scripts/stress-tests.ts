/**
 * The stress check the project keeps: the test suite, several times in a row, while another process keeps every core
 * busy. A suite that passes here does not depend on the machine being idle (its tests wait for events, not clocks).
 *
 *   npm run build && node dist/scripts/stress-tests.js [--runs 3] [--burners <cores>]
 *
 * Each run is `npm test` as README gives it (with the same environment, so WEAVIATE_URL or a local Go build apply as
 * usual), bounded to 30 minutes. Prints each run's time and its pass/fail counts; exits 1 if any run failed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const args = process.argv.slice(2);
const flag = (name: string, dflt: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const runs = flag('--runs', 3);
const burners = flag('--burners', availableParallelism());

/** A process that spins on one core until killed, at normal priority (it competes with the tests as an equal). */
const burn = (): ChildProcess => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });

interface RunResult {
  run: number;
  seconds: number;
  code: number | null;
  summary: string;
}

function runSuite(run: number): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('npm', ['test'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let tail = '';
    const keep = (d: Buffer) => {
      tail = (tail + d.toString()).slice(-20_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const limit = setTimeout(() => child.kill('SIGKILL'), 30 * 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(limit);
      const counts = ['tests', 'pass', 'fail', 'skipped'].map((k) => `${k} ${new RegExp(`^# ${k} (\\d+)`, 'm').exec(tail)?.[1] ?? '?'}`);
      const failing = [...tail.matchAll(/^not ok \d+ - (.+)$/gm)].map((m) => m[1]).join('; ');
      resolve({ run, seconds: (performance.now() - started) / 1000, code, summary: counts.join(', ') + (failing ? `; failing: ${failing}` : '') });
    });
  });
}

const spinning = Array.from({ length: burners }, burn);
const stopBurners = () => spinning.forEach((p) => p.kill('SIGKILL'));
process.once('SIGINT', () => {
  stopBurners();
  process.exit(130);
});
const results: RunResult[] = [];
try {
  console.error(`${burners} busy process(es) keep the ${availableParallelism()} core(s) loaded; ${runs} run(s) of npm test`);
  for (let i = 1; i <= runs; i++) {
    const r = await runSuite(i);
    results.push(r);
    console.log(`run ${r.run}: ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code})`} in ${r.seconds.toFixed(0)} s (${r.summary})`);
  }
} finally {
  stopBurners();
}
const passed = results.filter((r) => r.code === 0).length;
console.log(`${passed} of ${runs} runs passed under load; times ${results.map((r) => `${r.seconds.toFixed(0)} s`).join(', ')}`);
process.exitCode = passed === runs ? 0 : 1;
