/**
 * Ingest benchmark: `embatch prepare` against the csv-parse floor, measured in the same run on the same file.
 *
 *   node dist/bench/ingest.js [rows...] [--keep]      (default: 1000000 rows)
 *   BENCH_SET='state_max_open_files=64' node dist/bench/ingest.js 1000000 4000000   (config for prepare, as --set)
 *
 * For each size: generates a catalog-shaped CSV (bench/gen-catalog), runs csv-parse alone (floor) and prepare into a
 * fresh work directory, each in its own process, and prints rows/s, MB/s, the ratio to the floor and peak RSS.
 * With several sizes it also prints each size's prepare peak RSS against the first's.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCatalog } from '../scripts/gen-catalog.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const tmp = path.join(root, '.tmp', 'bench');
const args = process.argv.slice(2);
const keep = args.includes('--keep');
const sizes = args.filter((a) => /^\d+$/.test(a)).map(Number);
if (!sizes.length) sizes.push(1_000_000);

interface Measure {
  rows: number;
  seconds: number;
  peakRssMB: number;
}

/**
 * Runs a node script and samples its memory from /proc every 250 ms (Linux): peak anonymous memory (what the process
 * allocates) and peak file-backed pages (LevelDB's memory-mapped table files, which the kernel can drop).
 */
async function runNodeSampled(script: string, scriptArgs: string[]): Promise<{ stdout: string; anonMB: number; fileMB: number }> {
  const child = spawn(process.execPath, [script, ...scriptArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  let anonMB = 0;
  let fileMB = 0;
  const sample = setInterval(() => {
    try {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const kB = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
      anonMB = Math.max(anonMB, kB('RssAnon') / 1024);
      fileMB = Math.max(fileMB, kB('RssFile') / 1024);
    } catch {
      // not Linux, or the process just ended
    }
  }, 250);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearInterval(sample);
  if (code !== 0) throw new Error(`${script} exited with ${code}`);
  return { stdout, anonMB, fileMB };
}

mkdirSync(tmp, { recursive: true });
const results: Array<{ rows: number; mb: number; floor: Measure; prepare: Measure & { anonMB: number; fileMB: number; newStrings: number; tokens: number; files: number } }> = [];
for (const rows of sizes) {
  const csv = path.join(tmp, `catalog-${rows}.csv`);
  const out = createWriteStream(csv);
  await writeCatalog(out, rows);
  await new Promise<void>((resolve) => out.end(() => resolve()));
  const mb = statSync(csv).size / 1e6;

  const floor = JSON.parse((await runNodeSampled(path.join(here, 'csv-floor.js'), [csv])).stdout) as Measure;
  const work = path.join(tmp, `work-${rows}`);
  rmSync(work, { recursive: true, force: true });
  const extra = (process.env.BENCH_SET ?? '').split(/\s+/).filter(Boolean).flatMap((kv) => ['--set', kv]);
  const sampled = await runNodeSampled(path.join(root, 'dist', 'src', 'cli.js'), ['prepare', csv, '--work-dir', work, '--json', '--config', path.join(root, 'config.yml'), ...extra]);
  const summary = JSON.parse(sampled.stdout);
  results.push({
    rows,
    mb,
    floor,
    prepare: { rows: summary.rows, seconds: summary.elapsedSeconds, peakRssMB: summary.peakRssMB, anonMB: sampled.anonMB, fileMB: sampled.fileMB, newStrings: summary.newStrings, tokens: summary.tokens, files: summary.filesWritten.length },
  });
  const r = results.at(-1)!;
  const line = (label: string, m: Measure) =>
    `${label.padEnd(13)} ${m.seconds.toFixed(2).padStart(7)} s ${Math.round(rows / m.seconds).toLocaleString('en-US').padStart(9)} rows/s ${(mb / m.seconds).toFixed(1).padStart(6)} MB/s  peak RSS ${m.peakRssMB.toFixed(0).padStart(5)} MB`;
  console.log(`\n${rows.toLocaleString('en-US')} rows, ${mb.toFixed(1)} MB, ${r.prepare.newStrings.toLocaleString('en-US')} distinct strings, ${r.prepare.tokens.toLocaleString('en-US')} tokens, ${r.prepare.files} request files`);
  console.log(line('csv-parse', floor));
  console.log(line('prepare', r.prepare));
  console.log(`memory        prepare's peak anonymous memory ${r.prepare.anonMB.toFixed(0)} MB, peak mapped file pages ${r.prepare.fileMB.toFixed(0)} MB`);
  console.log(`ratio         prepare runs at ${((100 * floor.seconds) / r.prepare.seconds).toFixed(0)}% of the csv-parse floor (target: 50% or better)`);
  if (!keep) rmSync(work, { recursive: true, force: true });
  if (!keep) rmSync(csv, { force: true });
}
if (results.length > 1) {
  const base = results[0]!;
  console.log('\npeak RSS of prepare against the smallest size (target: within 10%)');
  // No /proc (not Linux): the sampled figures stay 0 and are shown as n/a.
  const pct = (a: number, b: number) => (b ? `${((100 * a) / b - 100).toFixed(1).padStart(6)}%` : '    n/a');
  for (const r of results)
    console.log(
      `  ${r.rows.toLocaleString('en-US').padStart(11)} rows ${r.prepare.peakRssMB.toFixed(0).padStart(5)} MB ${pct(r.prepare.peakRssMB, base.prepare.peakRssMB)}   anonymous ${r.prepare.anonMB.toFixed(0).padStart(5)} MB ${pct(r.prepare.anonMB, base.prepare.anonMB)}`,
    );
}
