/**
 * The whole pipeline from a program: prepare a CSV, submit batches, poll, download, and write the objects, with the
 * run's progress as events. `simulate: true` uses the built-in OpenAI simulator (no account, no network); without it
 * the key comes from OPENAI_API_KEY.
 *
 *   node run-with-progress.js <catalog.csv> <work-dir> <objects.jsonl>
 */
import { defineConfig, runPipeline, type RunEvent } from 'embatch';

const [csv, workDir, objects] = process.argv.slice(2);
if (!csv || !workDir || !objects) throw new Error('usage: run-with-progress <catalog.csv> <work-dir> <objects.jsonl>');
const config = defineConfig({ work_dir: workDir, batch_manual_polling: false, batch_poll_interval: 0.2, dimensions: 64 });

const events: RunEvent['type'][] = [];
const result = await runPipeline(config, {
  input: csv,
  simulate: true,
  sink: `jsonl:${objects}`,
  onEvent: (e) => {
    events.push(e.type);
    if (e.type === 'waiting') console.error(`${e.active} batch(es) running, ${e.queued} queued`);
    if (e.type === 'indexed') console.error(`${e.summary.acked} objects written`);
  },
});
console.log(JSON.stringify({ done: result.done, strings: result.status.strings, objects: result.status.objects, events }));
