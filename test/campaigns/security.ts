/**
 * Campaign 4, security: the API keys never reach logs, state, result files, error messages or `--json` output (every
 * file the runs wrote is searched); state and downloaded files are the owner's alone; a file id from the API that is
 * not a plain id is refused; a config file holding a key that others can read draws a warning; and Weaviate API-key
 * authentication works against a server started with it (and its absence is a clear error). Without a Weaviate
 * server the same runs go to the JSONL sink and every check but the Weaviate ones is made: they need none.
 *
 *   node dist/test/campaigns/security.js
 */
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { fixture, ROOT } from '../helpers.js';
import { weaviateForTests, type WeaviateTarget } from '../weaviate-support.js';
import { API_KEY, cliEnv, connect, runCli, simulator, type Outcome } from './harness.js';

export const WEAVIATE_KEY = 'wv-campaign-key-0a1b2c3d4e5f';

export interface SecurityFigures {
  commands: number;
  filesSearched: number;
  bytesSearched: number;
  keyFoundIn: string[];
  notOwnerOnly: string[];
  badFileIdRefused: boolean;
  configWarning: boolean;
  /** Null when no Weaviate server was given (the checks that need one were not made). */
  weaviateAuthIndexed: number | null;
  weaviateNoKeyClearError: boolean | null;
  wrongOpenAiKeyClearError: boolean;
  stackTraces: number;
}

export async function security(o: { dir: string; weaviate?: WeaviateTarget | undefined; log?: (line: string) => void }): Promise<SecurityFigures> {
  const log = o.log ?? (() => {});
  rmSync(o.dir, { recursive: true, force: true });
  mkdirSync(o.dir, { recursive: true });
  const sim = await simulator(path.join(o.dir, 'sim'));
  const work = path.join(o.dir, 'work');
  const outputs: Outcome[] = [];
  const cfgDir = path.join(o.dir, 'cfg');
  mkdirSync(cfgDir, { recursive: true });
  const config = path.join(cfgDir, 'config.yml');
  writeFileSync(config, `openai_api_key: ${API_KEY}\nwork_dir: ${work}\n`, { mode: 0o600 });
  // The key comes from the config file here, not the environment.
  const { OPENAI_API_KEY: _fromEnv, ...env } = cliEnv(sim, o.weaviate, 'SecurityCampaign');
  const cli = async (args: string[], extra: Record<string, string> = {}) => {
    const r = await runCli([...args, '--config', config], { env: { ...env, ...extra } });
    outputs.push(r);
    return r;
  };
  try {
    const sink = o.weaviate ? [] : ['--sink', `jsonl:${path.join(work, 'run-objects.jsonl')}`];
    const run = await cli(['run', fixture('catalog.csv'), '--wait', '--json', ...sink]);
    if (run.code !== 0) throw new Error(`run failed: ${run.stderr}`);
    await cli(['status', '--json']);
    await cli(['replay', path.join(work, 'results', 'batch_results_*.jsonl'), '--sink', `jsonl:${path.join(work, 'objects.jsonl')}`, '--json']);

    let weaviateAuthIndexed: number | null = null;
    let weaviateNoKeyClearError: boolean | null = null;
    if (o.weaviate) {
      await cli(['query', 'Schubert', '--json']);
      const client = await connect(o.weaviate);
      weaviateAuthIndexed = (await client.collections.get('SecurityCampaign').aggregate.overAll()).totalCount;
      await client.collections.delete('SecurityCampaign');
      await client.close();
      const noKey = await cli(['replay', path.join(work, 'results', 'batch_results_*.jsonl'), '--json'], { WEAVIATE_API_KEY: '' });
      weaviateNoKeyClearError = noKey.code === 1 && /Weaviate/i.test(noKey.stderr);
    }

    // The wrong OpenAI key: refused, and the message does not echo it whole (query embeds before it asks Weaviate).
    const wrong = await cli(['query', 'Schubert'], { OPENAI_API_KEY: `${API_KEY}-wrong` });
    log(`wrong key: exit ${wrong.code}: ${wrong.stderr.trim()}`);
    const wrongOpenAiKeyClearError = wrong.code === 1 && /rejected the key \(401\)/.test(wrong.stderr) && !wrong.stderr.includes(`${API_KEY}-wrong`);

    // A config file holding a key that others can read.
    chmodSync(config, 0o644);
    const loose = await cli(['status', '--offline']);
    const configWarning = /read by other users/i.test(loose.stderr);
    chmodSync(config, 0o600);

    // A batch whose output file id is a path: it must not be used as one.
    const small = path.join(o.dir, 'small.csv');
    writeFileSync(small, readFileSync(fixture('catalog.csv'), 'utf8').split('\n').slice(0, 1).join('\n') + '\n1,"Title: a new one",m,"Newname, Zed",Composer,New title,a,p,s,g,NaN,1,2\n');
    await cli(['prepare', small]);
    await cli(['submit']);
    const api = new OpenAI({ apiKey: API_KEY, baseURL: sim.baseURL });
    let badFileIdRefused = false;
    const newest = (await api.batches.list({ limit: 1 })).data[0]!;
    for (let i = 0; i < 100; i++) {
      // Asked through the API, so the simulator moves the batch on; embatch has not seen it end yet.
      if ((await api.batches.retrieve(newest.id)).status === 'completed') break;
      await sleep(200);
    }
    const record = path.join(o.dir, 'sim', 'batches', `${newest.id}.json`);
    const stored = JSON.parse(readFileSync(record, 'utf8'));
    stored.batch.output_file_id = '../../../../tmp/embatch-evil';
    writeFileSync(record, JSON.stringify(stored));
    await cli(['status']);
    const dl = await cli(['download']);
    log(`tampered file id: exit ${dl.code}: ${dl.stderr.trim()}`);
    badFileIdRefused = dl.code === 1 && /not safe to use/.test(dl.stderr);

    // Every file written under the work directory, and every output, searched for both keys.
    const keyFoundIn: string[] = [];
    const notOwnerOnly: string[] = [];
    let filesSearched = 0;
    let bytesSearched = 0;
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        const mode = statSync(p).mode & 0o777;
        if (mode & 0o077) notOwnerOnly.push(`${path.relative(o.dir, p)} (${mode.toString(8)})`);
        if (e.isDirectory()) walk(p);
        else {
          const bytes = readFileSync(p);
          filesSearched++;
          bytesSearched += bytes.length;
          if (bytes.includes(API_KEY) || bytes.includes(WEAVIATE_KEY)) keyFoundIn.push(path.relative(o.dir, p));
        }
      }
    };
    walk(work);
    outputs.forEach((r, i) => {
      if (r.stdout.includes(API_KEY) || r.stdout.includes(WEAVIATE_KEY)) keyFoundIn.push(`stdout of command ${i + 1}`);
      if (r.stderr.includes(API_KEY) || r.stderr.includes(WEAVIATE_KEY)) keyFoundIn.push(`stderr of command ${i + 1}`);
    });
    const stackTraces = outputs.filter((r) => /^\s+at .+:\d+:\d+\)?$/m.test(r.stderr)).length;
    log(`searched ${filesSearched} files (${bytesSearched} bytes) and ${outputs.length} commands' output`);
    return { commands: outputs.length, filesSearched, bytesSearched, keyFoundIn, notOwnerOnly, badFileIdRefused, configWarning, weaviateAuthIndexed, weaviateNoKeyClearError, wrongOpenAiKeyClearError, stackTraces };
  } finally {
    await sim.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const server = await weaviateForTests({ apiKey: WEAVIATE_KEY });
  if (server.target === undefined) throw new Error(server.skip);
  const target = server.target;
  try {
    console.log(JSON.stringify(await security({ dir: path.join(ROOT, '.tmp', 'campaign-security'), weaviate: target, log: (l) => console.error(l) }), null, 2));
  } finally {
    await target.release();
  }
}
