/**
 * `embatch replay` through the library, for bench/weaviate: one result file into one collection, timed as a whole
 * (wall clock and CPU of this process, as the Python side times itself).
 *
 *   node dist/bench/weaviate-embatch.js <work dir> <results.jsonl> <collection> <batch_size>x<concurrency>
 *
 * Weaviate's address comes from WEAVIATE_URL / WEAVIATE_GRPC_PORT. Prints one JSON line: objects, seconds,
 * cpu_seconds, failed.
 */
import path from 'node:path';
import { loadConfig, replay } from '../src/api.js';
import { ROOT } from './make-results.js';

const [work, results, collection, setting] = process.argv.slice(2);
const [batchSize, concurrency] = setting!.split('x').map(Number);
const { config } = loadConfig({
  configPath: path.join(ROOT, 'config.yml'),
  flags: { work_dir: work, weaviate: { collection, batch_size: batchSize, concurrency } },
});
const cpu = process.cpuUsage();
const started = performance.now();
const summary = await replay(config, [results!]);
const seconds = (performance.now() - started) / 1000;
const used = process.cpuUsage(cpu);
console.log(JSON.stringify({ objects: summary.acked, seconds, cpu_seconds: (used.user + used.system) / 1e6, failed: summary.objects - summary.acked }));
