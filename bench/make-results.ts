/**
 * Test data for the results benchmarks: a work directory holding enough strings, and Batch API result files for its
 * request lines with random unit vectors, in either encoding. Shared by bench/results and bench/weaviate.
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import split2 from 'split2';
import { toBase64 } from '../src/simulator/embedding.js';
import { LineSpool } from '../src/simulator/line-spool.js';
import { mulberry32, writeCatalog } from '../scripts/gen-catalog.js';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
export const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');

/** A work directory with at least `strings` request lines (about 1.8 distinct strings per catalog row). */
export async function benchWorkDir(dir: string, strings: number): Promise<string> {
  const work = path.join(dir, `work-${strings}`);
  if (existsSync(path.join(work, 'requests'))) return work;
  mkdirSync(dir, { recursive: true });
  const csv = path.join(dir, `catalog-${strings}.csv`);
  const out = createWriteStream(csv);
  await writeCatalog(out, Math.ceil(strings / 1.7));
  await new Promise<void>((r) => out.end(() => r()));
  execFileSync(process.execPath, [CLI, 'prepare', csv, '--work-dir', work, '--quiet', '--config', path.join(ROOT, 'config.yml')], { stdio: 'inherit' });
  return work;
}

/**
 * A result file with `lines` lines for the work directory's request lines, with random unit vectors: in request order,
 * or (`shuffled`) in a full shuffle, as OpenAI may return them (its output keeps no order).
 */
export async function makeResultFile(work: string, file: string, lines: number, format: 'float' | 'base64', dims = 1536, order: 'ordered' | 'shuffled' = 'ordered'): Promise<void> {
  if (order === 'shuffled') {
    const ordered = `${file}.ordered`;
    await makeResultFile(work, ordered, lines, format, dims);
    const spool = await LineSpool.over(ordered);
    await spool.shuffleInto(file, `${file}.none`, 42);
    rmSync(ordered, { force: true });
    rmSync(`${file}.none`, { force: true });
    return;
  }
  const out = createWriteStream(file);
  const rnd = mulberry32(42);
  let written = 0;
  const requests = readdirSync(path.join(work, 'requests')).filter((n) => n.endsWith('.jsonl')).sort();
  for (const name of requests) {
    for await (const line of createReadStream(path.join(work, 'requests', name)).pipe(split2('\n'))) {
      if (written >= lines) break;
      const customId = /"custom_id":"([^"]+)"/.exec(line as string)![1]!;
      const v = new Float32Array(dims);
      let norm = 0;
      for (let i = 0; i < dims; i++) {
        const x = Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
        v[i] = x;
        norm += x * x;
      }
      for (let i = 0; i < dims; i++) v[i]! /= Math.sqrt(norm);
      const embedding = format === 'base64' ? JSON.stringify(toBase64(v)) : `[${Array.from(v, (x) => x.toPrecision(10)).join(',')}]`;
      const text = `{"id":"batch_req_${written}","custom_id":"${customId}","response":{"status_code":200,"request_id":"req_${written}","body":{"object":"list","data":[{"object":"embedding","index":0,"embedding":${embedding}}],"model":"text-embedding-3-small","usage":{"prompt_tokens":10,"total_tokens":10}}},"error":null}\n`;
      if (!out.write(text)) await once(out, 'drain');
      written++;
    }
  }
  await new Promise<void>((r) => out.end(() => r()));
  if (written < lines) throw new Error(`only ${written} request lines in ${work}`);
}
