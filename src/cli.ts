#!/usr/bin/env node
/**
 * The `embatch` command line. Exit codes: 0 ok, 1 failure, 2 usage or configuration error.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yargs, { type Argv, type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { cancelCommand, downloadCommand, resetCommand, retryCommand, runCommand, simulateCommand, statusCommand, submitCommand } from './commands/batch.js';
import { prepareCommand } from './commands/prepare.js';
import { indexCommand, queryCommand, replayCommand, verifyCommand } from './commands/results.js';
import { EmbatchError, UsageError } from './errors.js';
import { log, redact } from './log.js';

// Each command's own argument type stays in its module: the list is only handed to yargs.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: Array<CommandModule<any, any>> = [prepareCommand, submitCommand, statusCommand, downloadCommand, retryCommand, runCommand, cancelCommand, resetCommand, simulateCommand, indexCommand, replayCommand, verifyCommand, queryCommand];

export function buildParser(argv: string[]): Argv {
  let parser = yargs(argv)
    .scriptName('embatch')
    .usage('$0 <command> [options]\n\nTurn huge CSV files into vectors in Weaviate through OpenAI embeddings (Batch API or real-time).')
    .option('config', { type: 'string', describe: 'Config file (YAML)', defaultDescription: './config.yml if present' })
    .option('work-dir', { type: 'string', describe: 'Work directory: state, request and result files (overrides work_dir)' })
    .option('set', { type: 'string', array: true, describe: 'Override any config key: --set key=value (dotted for nested keys: input.delimiter=";")' })
    .option('json', { type: 'boolean', default: false, describe: 'Print the result as JSON on stdout' })
    .option('quiet', { type: 'boolean', default: false, describe: 'Print only warnings and errors' })
    .option('debug', { type: 'boolean', default: false, describe: 'Print stack traces on errors' })
    .demandCommand(1, 'Name a command; see embatch --help.')
    .strict()
    .recommendCommands()
    .help()
    .alias('help', 'h')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .exitProcess(false)
    .fail((message, err) => {
      throw err ?? new UsageError('USAGE', `${message}\nRun with --help for usage.`);
    });
  for (const command of commands) parser = parser.command(command as never);
  return parser;
}

export async function main(argv: string[]): Promise<number> {
  let debug = argv.includes('--debug');
  try {
    await buildParser(argv).parseAsync();
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (err) {
    // The reader of stdout went away (`embatch ... | head`): nothing failed on this side, so end quietly.
    if (isBrokenPipe(err)) return process.exitCode === undefined ? 0 : Number(process.exitCode);
    if (err instanceof EmbatchError) {
      log.error(err.message);
      if (debug) process.stderr.write(redact(String(err.stack)) + '\n');
      return err.exitCode;
    }
    const e = err as Error;
    log.error(`unexpected failure: ${e?.message ?? String(err)} (rerun with --debug for details)`);
    if (debug) process.stderr.write(redact(String(e?.stack)) + '\n');
    return 1;
  }
}

function isBrokenPipe(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'EPIPE';
}

function isEntryPoint(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // Everything embatch writes (state, LevelDB's own files, request and result files) is the owner's alone: the
  // texts and vectors are the user's data, and native code (LevelDB) creates files with the process umask.
  process.umask(0o077);
  // A write to a closed pipe can also fail outside any command's promise chain: the same quiet end there.
  process.stdout.on('error', (err) => {
    if (!isBrokenPipe(err)) throw err;
    process.exit(process.exitCode === undefined ? 0 : Number(process.exitCode));
  });
  const code = await main(hideBin(process.argv));
  process.exitCode = code;
}
