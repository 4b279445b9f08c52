import type { CommandModule } from 'yargs';
import { log, printJson } from '../log.js';
import type { PrepareSummary } from '../prepare.js';
import { configFromArgs, modelFlags, modelOptions, num, usd, type CommonArgs } from './common.js';

interface PrepareArgs extends CommonArgs {
  input: string;
  source?: string;
  model?: string;
  dimensions?: number;
  'encoding-format'?: string;
  'embed-fields'?: string;
  'on-malformed-row'?: string;
}

export const prepareCommand: CommandModule<CommonArgs, PrepareArgs> = {
  command: 'prepare <input>',
  describe: 'Read a CSV (a file, or - for stdin) and write deduplicated Batch API request files; sends nothing',
  builder: (y) =>
    modelOptions(y)
      .positional('input', { type: 'string', demandOption: true, describe: 'CSV file, or - to read standard input' })
      .option('source', { type: 'string', describe: 'Name under which stdin counts are kept, so re-preparing the same data replaces them (default "stdin")' })
      .option('on-malformed-row', { choices: ['stop', 'skip'] as const, describe: 'stop at a malformed row, or skip it into rejects.jsonl (config: input.on_malformed_row)' })
      .example('$0 prepare fixtures/catalog.csv', 'request files for the bundled sample')
      .example('cat catalog.csv | $0 prepare - --source catalog', 'the same from a pipe') as never,
  handler: async (args) => {
    const config = configFromArgs(args, { ...modelFlags(args), 'input.on_malformed_row': args['on-malformed-row'] });
    const { prepare } = await import('../api.js');
    const summary = await prepare(config, { input: stdinOrPath(args.input), sourceName: args.source, showProgress: !args.json && !args.quiet });
    if (args.json) printJson({ command: 'prepare', ...summary });
    else printPrepareSummary(summary);
  },
};

/** yargs parses a lone "-" into an empty string (or true): both mean standard input. */
export function stdinOrPath(input: unknown): string {
  return input === '' || input === true || input === '-' ? '-' : String(input);
}

export function printPrepareSummary(s: PrepareSummary): void {
  const skipped = Object.entries(s.skipped).map(([reason, n]) => `${reason} ${num(n)}`).join(', ') || 'none';
  log.info(
    [
      `prepared ${s.input}`,
      `  rows read          ${num(s.rows)}${s.rowsRejected ? ` (+${num(s.rowsRejected)} malformed, in ${s.rejectsFile})` : ''}`,
      `  strings seen       ${num(s.stringsSeen)}`,
      `  distinct strings   ${num(s.distinctStrings)} (already known ${num(s.alreadyKnown)}, new ${num(s.newStrings)})`,
      `  skipped            ${skipped}`,
      `  request lines      ${num(s.requestLines)} in ${num(s.filesWritten.length)} new file(s)`,
      `  tokens             ${s.estimatedTokens ? `about ${num(s.tokens)} (${num(s.estimatedTokens)} estimated from a sample; submit counts each file exactly)` : num(s.tokens)}`,
      `  estimated cost     ${usd(s.estimatedCostUsd.batch)} with the Batch API, ${usd(s.estimatedCostUsd.realtime)} real-time`,
      `  took               ${s.elapsedSeconds.toFixed(1)} s, peak memory ${s.peakRssMB.toFixed(0)} MB`,
      ...s.filesWritten.map((f) => `  wrote              ${f}`),
    ].join('\n'),
  );
}
