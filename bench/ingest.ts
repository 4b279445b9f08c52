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
import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCatalog } from './gen-catalog.js';

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

function runNode(script: string, scriptArgs: string[]): string {
  return execFileSync(process.execPath, [script, ...scriptArgs], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'inherit'] });
}

mkdirSync(tmp, { recursive: true });
const results: Array<{ rows: number; mb: number; floor: Measure; prepare: Measure & { newStrings: number; tokens: number; files: number } }> = [];
for (const rows of sizes) {
  const csv = path.join(tmp, `catalog-${rows}.csv`);
  const out = createWriteStream(csv);
  await writeCatalog(out, rows);
  await new Promise<void>((resolve) => out.end(() => resolve()));
  const mb = statSync(csv).size / 1e6;

  const floor = JSON.parse(runNode(path.join(here, 'csv-floor.js'), [csv])) as Measure;
  const work = path.join(tmp, `work-${rows}`);
  rmSync(work, { recursive: true, force: true });
  const extra = (process.env.BENCH_SET ?? '').split(/\s+/).filter(Boolean).flatMap((kv) => ['--set', kv]);
  const summary = JSON.parse(runNode(path.join(root, 'dist', 'src', 'cli.js'), ['prepare', csv, '--work-dir', work, '--json', '--config', path.join(root, 'config.yml'), ...extra]));
  results.push({
    rows,
    mb,
    floor,
    prepare: { rows: summary.rows, seconds: summary.elapsedSeconds, peakRssMB: summary.peakRssMB, newStrings: summary.newStrings, tokens: summary.tokens, files: summary.filesWritten.length },
  });
  const r = results.at(-1)!;
  const line = (label: string, m: Measure) =>
    `${label.padEnd(13)} ${m.seconds.toFixed(2).padStart(7)} s ${Math.round(rows / m.seconds).toLocaleString('en-US').padStart(9)} rows/s ${(mb / m.seconds).toFixed(1).padStart(6)} MB/s  peak RSS ${m.peakRssMB.toFixed(0).padStart(5)} MB`;
  console.log(`\n${rows.toLocaleString('en-US')} rows, ${mb.toFixed(1)} MB, ${r.prepare.newStrings.toLocaleString('en-US')} distinct strings, ${r.prepare.tokens.toLocaleString('en-US')} tokens, ${r.prepare.files} request files`);
  console.log(line('csv-parse', floor));
  console.log(line('prepare', r.prepare));
  console.log(`ratio         prepare runs at ${((100 * floor.seconds) / r.prepare.seconds).toFixed(0)}% of the csv-parse floor (target: 50% or better)`);
  if (!keep) rmSync(work, { recursive: true, force: true });
  if (!keep) rmSync(csv, { force: true });
}
if (results.length > 1) {
  const base = results[0]!;
  console.log('\npeak RSS of prepare against the smallest size (target: within 10%)');
  for (const r of results) console.log(`  ${r.rows.toLocaleString('en-US').padStart(11)} rows ${r.prepare.peakRssMB.toFixed(0).padStart(5)} MB  ${((100 * r.prepare.peakRssMB) / base.prepare.peakRssMB - 100).toFixed(1).padStart(6)}%`);
}
