import type { CommandModule } from 'yargs';
import { log, printJson } from '../log.js';
import type { IndexSummary } from '../results.js';
import { configFromArgs, exitOnLedger, num, type CommonArgs } from './common.js';

interface SinkArgs extends CommonArgs {
  sink?: string;
}

/** The API, loaded when a command runs (keeps start-up light). */
const api = () => import('../api.js');

const sinkOption = { type: 'string' as const, describe: 'Where objects go: weaviate (default), jsonl (stdout) or jsonl:<path>' };

export const indexCommand: CommandModule<CommonArgs, SinkArgs & { 'retry-rejects': boolean }> = {
  command: 'index',
  describe: 'Index into Weaviate (or another sink) every downloaded object that target has not taken yet',
  builder: (y) =>
    y
      .option('sink', sinkOption)
      .option('retry-rejects', { type: 'boolean', default: false, describe: 'Send again the objects this target refused for good on an earlier run (once their cause is gone)' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const s = await (await api()).index(config, { sink: args.sink, retryRejects: args['retry-rejects'] });
    if (args.json) printJson({ command: 'index', ...s });
    else if (!s.files) log.info(`nothing to index into ${s.sink}: it has taken every downloaded result file (embatch status shows what is still to come)`);
    else printIndexSummary({ ...(s as unknown as IndexSummary), objects: s.objectsSent });
    exitOnLedger(s, 'indexed');
  },
};

export const verifyCommand: CommandModule<CommonArgs, SinkArgs & { repair: boolean }> = {
  command: 'verify',
  describe: "Compare the Weaviate collection with what this work directory recorded as indexed there: missing, differing, unrecorded and extra objects",
  builder: (y) =>
    y
      .option('sink', { type: 'string', describe: 'The target to check: weaviate (the default; its URL and collection from the configuration)' })
      .option('repair', { type: 'boolean', default: false, describe: 'Send missing and differing objects again from the stored result files, and record unrecorded ones' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    {
      const s = await (await api()).verify(config, { repair: args.repair, sink: args.sink });
      if (args.json) printJson({ command: 'verify', ...s });
      else {
        log.info(
          [
            `verified ${s.target}: ${num(s.objects)} object(s) read`,
            `  matching     ${num(s.matching)}`,
            `  missing      ${num(s.missing)} (recorded as indexed, not in the collection)`,
            `  differs      ${num(s.differs)} (id or properties not as recorded)`,
            `  unrecorded   ${num(s.unrecorded)} (in the collection, not recorded as indexed)`,
            `  extra        ${num(s.extra)} (of strings this work directory never wrote: counted only)`,
            `  findings in  ${s.findingsFile}`,
            `  took         ${s.elapsedSeconds.toFixed(1)} s, peak memory ${s.peakRssMB.toFixed(0)} MB`,
          ].join('\n'),
        );
        if (s.repaired) log.info(`repaired: ${num(s.repaired.resent)} object(s) sent again${s.repaired.index ? ` (${num(s.repaired.index.acked)} acknowledged)` : ''}, ${num(s.repaired.marked)} recorded`);
      }
      const open = s.repaired ? (s.repaired.index?.rejected ?? 0) : s.missing + s.differs;
      if (open) {
        log.warn(s.repaired ? `${num(open)} object(s) were refused when sent again: see index_rejects.jsonl` : `${num(open)} object(s) missing or differing: \`embatch verify --repair\` sends them again`);
        process.exitCode = 1;
      }
    }
  },
};

interface ReplayArgs extends SinkArgs {
  files: string[];
  'strings-from'?: string;
}

export const replayCommand: CommandModule<CommonArgs, ReplayArgs> = {
  command: 'replay <files..>',
  describe: 'Index stored result files again (paths, globs, or - for stdin); replaying twice leaves the collection unchanged',
  builder: (y) =>
    y
      .positional('files', { type: 'string', array: true, describe: 'Result JSONL files, globs like results/batch_results_*.jsonl, or -' })
      .option('sink', sinkOption)
      .option('strings-from', { type: 'string', describe: 'Rebuild the custom_id map from this CSV (prepared into a temporary store) instead of the work directory' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const s = await (await api()).replay(config, (args.files ?? []).map(String), { sink: args.sink, stringsFrom: args['strings-from'] });
    if (args.json) printJson({ command: 'replay', ...s });
    else printIndexSummary(s);
    failOnRejects(s);
  },
};

interface QueryArgs extends CommonArgs {
  text: string;
  field?: string;
  k: number;
  simulate: boolean;
}

export const queryCommand: CommandModule<CommonArgs, QueryArgs> = {
  command: 'query <text>',
  describe: 'Embed a text with the configured model and print the k nearest stored strings with their distance',
  builder: (y) =>
    y
      .positional('text', { type: 'string', demandOption: true })
      .option('field', { type: 'string', describe: 'Only strings of this field (field_type)' })
      .option('k', { type: 'number', default: 10, describe: 'How many neighbours' })
      .option('simulate', { type: 'boolean', default: false, describe: 'Embed with the built-in simulator' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const { hits } = await (await api()).query(config, String(args.text), { k: args.k, field: args.field, simulate: args.simulate });
    if (args.json) printJson({ command: 'query', text: args.text, hits });
    else for (const h of hits) log.info(`${(h.distance ?? NaN).toFixed(4)}  ${String(h.field).padEnd(10)} ${h.text.replace(/\n/g, ' | ').slice(0, 120)}`);
  },
};

/** Objects the sink refused for good are a failure: exit 1 (0 means nothing failed), saying where they are. */
export function failOnRejects(s: IndexSummary): void {
  if (!s.rejected) return;
  log.warn(`${num(s.rejected)} object(s) refused by ${s.sink}; the reasons are in ${s.rejectsFile}. Fix the cause, then: embatch index --retry-rejects`);
  process.exitCode = 1;
}

export function printIndexSummary(s: IndexSummary): void {
  const failed = Object.entries(s.failedLines).map(([code, n]) => `${code} ${num(n)}`).join(', ');
  log.info(
    [
      `indexed ${s.files} file(s) into ${s.sink}`,
      `  result lines       ${num(s.lines)}: ${num(s.embeddedLines)} embedded, ${num(s.lines - s.embeddedLines)} failed`,
      `  objects            ${num(s.objects)} sent, ${num(s.acked)} acknowledged${s.rejected ? `, ${num(s.rejected)} rejected` : ''}${s.alreadyIndexed ? ` (${num(s.alreadyIndexed)} already indexed, skipped)` : ''}`,
      s.alreadyRejected ? `  not sent again     ${num(s.alreadyRejected)} refused for good on an earlier run (--retry-rejects sends them)` : '',
      failed ? `  failed lines       ${failed} (in ${s.rejectsFile})` : '',
      s.requestRetries || s.objectRetries ? `  retries            ${num(s.requestRetries)} request(s), ${num(s.objectRetries)} object(s)` : '',
      `  took               ${s.elapsedSeconds.toFixed(1)} s, peak memory ${s.peakRssMB.toFixed(0)} MB`,
    ]
      .filter(Boolean)
      .join('\n'),
  );
}
