/**
 * Results benchmark: `embatch replay` into the JSONL sink against the floor of JSON.parse per line, on the same file
 * in the same run, for both encodings.
 *
 *   node dist/bench/results.js [lines] [--keep]          (default 100,000 lines, 1,536 dimensions)
 */
import { execFileSync } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { benchWorkDir, CLI, makeResultFile, ROOT } from './make-results.js';

const args = process.argv.slice(2);
const lines = Number(args.find((a) => /^\d+$/.test(a)) ?? 100_000);
const dir = path.join(ROOT, '.tmp', 'bench-results');
const work = await benchWorkDir(dir, lines);
const node = (script: string, a: string[]) => JSON.parse(execFileSync(process.execPath, [script, ...a], { encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] }));

for (const format of ['base64', 'float'] as const) {
  const file = path.join(dir, `results-${lines}-${format}.jsonl`);
  await makeResultFile(work, file, lines, format);
  const mb = statSync(file).size / 1e6;
  const floor = node(path.join(ROOT, 'dist', 'bench', 'results-floor.js'), [file]);
  const run = node(CLI, ['replay', file, '--sink', 'jsonl:/dev/null', '--work-dir', work, '--json', '--config', path.join(ROOT, 'config.yml')]);
  const line = (label: string, seconds: number, rss: number) =>
    `${label.padEnd(22)} ${seconds.toFixed(2).padStart(7)} s ${Math.round(lines / seconds).toLocaleString('en-US').padStart(8)} lines/s ${(mb / seconds).toFixed(0).padStart(5)} MB/s  peak RSS ${rss.toFixed(0).padStart(4)} MB`;
  console.log(`\n${lines.toLocaleString('en-US')} result lines, ${format}, ${mb.toFixed(0)} MB; ${run.objects.toLocaleString('en-US')} objects`);
  console.log(line('JSON.parse per line', floor.seconds, floor.peakRssMB));
  console.log(line('replay -> jsonl sink', run.elapsedSeconds, run.peakRssMB));
  console.log(`ratio                  the index pipeline runs at ${((100 * floor.seconds) / run.elapsedSeconds).toFixed(0)}% of the floor (target: 80% or better)`);
  if (!args.includes('--keep')) rmSync(file, { force: true });
}
