/**
 * Results benchmark: `embatch replay` into the JSONL sink against the floor of JSON.parse per line, on the same file
 * in the same run, for both encodings, with each file's lines in request order and in a full shuffle.
 *
 *   node dist/bench/results.js [lines...] [--keep] [--base64-only]     (default 100,000 lines, 1,536 dimensions)
 *
 * With several sizes it also prints each size's replay peak RSS against the smallest's (`12000 120000` gives about
 * 100 MB and 1 GB of base64 results).
 */
import { execFileSync } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { benchWorkDir, CLI, makeResultFile, ROOT } from './make-results.js';

const args = process.argv.slice(2);
const sizes = args.filter((a) => /^\d+$/.test(a)).map(Number);
if (!sizes.length) sizes.push(100_000);
const formats = args.includes('--base64-only') ? (['base64'] as const) : (['base64', 'float'] as const);
const dir = path.join(ROOT, '.tmp', 'bench-results');
const work = await benchWorkDir(dir, Math.max(...sizes));
const node = (script: string, a: string[]) => JSON.parse(execFileSync(process.execPath, [script, ...a], { encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] }));

const rss: Record<string, Array<{ lines: number; mb: number; peakRssMB: number }>> = {};
for (const format of formats) {
  for (const lines of sizes) {
    // The same lines twice: in request order, and in a full shuffle (OpenAI's output keeps no order).
    const runs: Record<string, { seconds: number; floor: number }> = {};
    for (const order of ['ordered', 'shuffled'] as const) {
      const file = path.join(dir, `results-${lines}-${format}-${order}.jsonl`);
      await makeResultFile(work, file, lines, format, 1536, order);
      const mb = statSync(file).size / 1e6;
      const floor = node(path.join(ROOT, 'dist', 'bench', 'results-floor.js'), [file]);
      const run = node(CLI, ['replay', file, '--sink', 'jsonl:/dev/null', '--work-dir', work, '--json', '--config', path.join(ROOT, 'config.yml')]);
      const line = (label: string, seconds: number, peak: number) =>
        `${label.padEnd(22)} ${seconds.toFixed(2).padStart(7)} s ${Math.round(lines / seconds).toLocaleString('en-US').padStart(8)} lines/s ${(mb / seconds).toFixed(0).padStart(5)} MB/s  peak RSS ${peak.toFixed(0).padStart(4)} MB`;
      console.log(`\n${lines.toLocaleString('en-US')} result lines, ${format}, ${order}, ${mb.toFixed(0)} MB; ${run.objects.toLocaleString('en-US')} objects`);
      console.log(line('JSON.parse per line', floor.seconds, floor.peakRssMB));
      console.log(line('replay -> jsonl sink', run.elapsedSeconds, run.peakRssMB));
      console.log(`ratio                  the index pipeline runs at ${((100 * floor.seconds) / run.elapsedSeconds).toFixed(0)}% of the floor (target: 80% or better)`);
      runs[order] = { seconds: run.elapsedSeconds, floor: floor.seconds };
      if (order === 'ordered') (rss[format] ??= []).push({ lines, mb, peakRssMB: run.peakRssMB });
      if (!args.includes('--keep')) rmSync(file, { force: true });
    }
    const { ordered, shuffled } = runs as Record<'ordered' | 'shuffled', { seconds: number }>;
    console.log(`shuffled / ordered     ${(shuffled.seconds / ordered.seconds).toFixed(2)}x (target: 1.25x or less)`);
  }
}
if (sizes.length > 1) {
  console.log('\npeak RSS of replay against the smallest file (target: within 10%)');
  for (const [format, runs] of Object.entries(rss))
    for (const r of runs)
      console.log(`  ${format.padEnd(6)} ${r.lines.toLocaleString('en-US').padStart(9)} lines ${r.mb.toFixed(0).padStart(6)} MB  ${r.peakRssMB.toFixed(0).padStart(5)} MB  ${((100 * r.peakRssMB) / runs[0]!.peakRssMB - 100).toFixed(1).padStart(6)}%`);
}
