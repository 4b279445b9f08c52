import type { Argv } from 'yargs';
import { coerceScalar, loadConfig, type Config } from '../config.js';
import { UsageError } from '../errors.js';
import { ledgerProblems, type Ledger } from '../ledger.js';
import { log, registerSecret, setQuiet } from '../log.js';

export interface CommonArgs {
  config?: string;
  'work-dir'?: string;
  set?: string[];
  json: boolean;
  quiet: boolean;
  debug: boolean;
}

/** Config for a command: file, environment and flags, with the API key registered for redaction before any output. */
export function configFromArgs(args: CommonArgs, flags: Record<string, unknown> = {}): Config {
  setQuiet(args.quiet || args.json);
  const overrides: Record<string, unknown> = { ...flags };
  if (args['work-dir'] !== undefined) overrides.work_dir = args['work-dir'];
  for (const pair of args.set ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError('USAGE', `--set takes key=value, got "${pair}"`);
    overrides[pair.slice(0, eq).trim()] = coerceScalar(pair.slice(eq + 1));
  }
  registerSecret(process.env.OPENAI_API_KEY);
  const { config, warnings } = loadConfig({ configPath: args.config, flags: overrides });
  registerSecret(config.openai_api_key);
  registerSecret(config.weaviate.api_key);
  for (const w of warnings) log.warn(w);
  return config;
}

/** Shorthand flags for the most used config keys. */
export function modelOptions<T>(y: Argv<T>) {
  return y
    .option('model', { type: 'string', describe: 'Embedding model (config: model)' })
    .option('dimensions', { type: 'number', describe: 'Output dimensions, text-embedding-3 models only (config: dimensions)' })
    .option('encoding-format', { choices: ['float', 'base64'] as const, describe: 'Vector encoding in results (config: encoding_format)' })
    .option('embed-fields', { type: 'string', describe: 'Comma-separated columns to embed (config: embed_fields)' });
}

export function modelFlags(args: { model?: string; dimensions?: number; 'encoding-format'?: string; 'embed-fields'?: string }): Record<string, unknown> {
  return { model: args.model, dimensions: args.dimensions, encoding_format: args['encoding-format'], embed_fields: args['embed-fields'] };
}

export const usd = (n: number | null) =>
  n === null ? 'unknown (model not in the price table)' : n === 0 ? '$0' : n < 0.01 ? `$${n.toPrecision(2)}` : `$${n.toFixed(2)}`;
export const num = (n: number) => n.toLocaleString('en-US');

/**
 * Exit code 1 (and each problem with its next step) when the ledger a command leaves has strings failed or objects the
 * target has not acknowledged: 0 means the ledger holds only indexed and skipped strings (or, for a command that
 * stops at `stage` embedded, that nothing failed).
 */
export function exitOnLedger(ledger: Ledger, stage: 'embedded' | 'indexed'): void {
  const problems = ledgerProblems(ledger, stage);
  for (const p of problems) log.warn(p);
  if (problems.length) process.exitCode = 1;
}
