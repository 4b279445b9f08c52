/**
 * Configuration: one zod schema, four layers. Precedence: command-line flag > environment > config file > default.
 * Every key of the seed system keeps its name and meaning; an unknown key or a bad value is a usage error (exit 2)
 * naming the key, the layer it came from and what is wrong.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { UsageError } from './errors.js';
import { dimensionsProblem, KNOWN_MODELS, modelInfo } from './models.js';

const commaList = (item: z.ZodType<string>) =>
  z.preprocess((v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()) : v), z.array(item));

const inputSchema = z
  .object({
    delimiter: z.string().min(1).default(','),
    quote: z.string().length(1).default('"'),
    escape: z.string().length(1).default('"'),
    encoding: z.string().min(1).default('utf-8'),
    header: z.boolean().default(true),
    columns: commaList(z.string().min(1)).nullable().default(null),
    null_values: commaList(z.string()).default(['', 'NaN']),
    on_malformed_row: z.enum(['stop', 'skip']).default('stop'),
    normalize: z.enum(['none', 'NFC', 'NFD', 'NFKC', 'NFKD']).default('none'),
    trim: z.boolean().default(false),
  })
  .strict();

/** The built-in OpenAI simulator's pace and faults (`--simulate`, `embatch simulate`). */
const simulatorSchema = z
  .object({
    validating_seconds: z.number().min(0).default(1),
    lines_per_second: z.number().positive().default(5000),
    finalizing_seconds: z.number().min(0).default(1),
    completion_window_seconds: z.number().positive().default(86_400),
    enqueued_token_limit: z.number().positive().nullable().default(null),
    enqueued_request_limit: z.number().int().positive().default(1_000_000),
    line_server_error_rate: z.number().min(0).max(1).default(0),
    line_bad_request_rate: z.number().min(0).max(1).default(0),
    rate_429: z.number().min(0).max(1).default(0),
    rate_500: z.number().min(0).max(1).default(0),
    rate_reset: z.number().min(0).max(1).default(0),
    rate_stall: z.number().min(0).max(1).default(0),
    rate_truncate: z.number().min(0).max(1).default(0),
    truncate_first_downloads: z.number().int().min(0).default(0),
    api_key: z.string().nullable().default(null),
    rpm: z.number().positive().nullable().default(null),
    tpm: z.number().positive().nullable().default(null),
    quota_tokens: z.number().int().min(0).nullable().default(null),
    reject_inputs_containing: z.string().min(1).nullable().default(null),
    omit_inputs_containing: z.string().min(1).nullable().default(null),
  })
  .strict();

/** Real-time mode (use_batch_embeddings: false): the account's limits and how requests are packed. */
const realtimeSchema = z
  .object({
    rpm: z.number().positive().default(3000),
    tpm: z.number().positive().default(1_000_000),
    tpd: z.number().positive().nullable().default(null),
    concurrency: z.number().int().min(1).max(256).default(8),
    max_inputs_per_request: z.number().int().min(1).max(2048).default(2048),
    max_tokens_per_request: z.number().int().min(1).max(300_000).default(300_000),
    max_retries: z.number().int().min(0).default(6),
    burst_seconds: z.number().min(1).max(60).default(6),
  })
  .strict();

/** Vector compression of the collection's HNSW index (Weaviate's quantizers), with their main parameters. */
const compressionSchema = z
  .object({
    type: z.enum(['none', 'rq', 'pq', 'bq']).default('none'),
    /** rq: bits per dimension (8: about 4x smaller; 1: about 32x). */
    bits: z.union([z.literal(1), z.literal(8)]).default(8),
    /** pq: segments (a divisor of the dimensions; null: the server's choice) and centroids per segment. */
    segments: z.number().int().min(1).nullable().default(null),
    centroids: z.number().int().min(2).max(256).default(256),
    /** pq: objects to train on before compressing. */
    training_limit: z.number().int().min(1000).default(100_000),
    /** Candidates read back at full precision to rescore each search (rq, bq). */
    rescore_limit: z.number().int().min(0).default(1000),
  })
  .strict();

/** Where results go: the Weaviate server, the collection, and how objects are sent. */
const weaviateSchema = z
  .object({
    url: z.string().url().default('http://127.0.0.1:8080'),
    grpc_port: z.number().int().min(1).max(65_535).default(50051),
    api_key: z.string().min(1).nullable().default(null),
    collection: z.string().regex(/^[A-Z][_0-9A-Za-z]*$/, 'must start with a capital letter (Weaviate class names do)').default('EntityString'),
    batch_size: z.number().int().min(1).max(10_000).default(500),
    max_batch_bytes: z.number().int().min(1024).max(100_000_000).default(16_000_000),
    concurrency: z.number().int().min(1).max(64).default(4),
    max_object_retries: z.number().int().min(0).default(2),
    request_retries: z.number().int().min(0).default(6),
    timeout_insert: z.number().positive().default(90),
    timeout_query: z.number().positive().default(30),
    timeout_init: z.number().positive().default(10),
    ef: z.number().int().min(-1).default(-1),
    ef_construction: z.number().int().min(4).default(128),
    max_connections: z.number().int().min(4).default(32),
    // A cluster: applied when the collection is created, checked against an existing one before anything is written.
    replication_factor: z.number().int().min(1).default(1),
    shards: z.number().int().min(1).nullable().default(null),
    consistency_level: z.enum(['ONE', 'QUORUM', 'ALL']).default('QUORUM'),
    async_replication: z.boolean().default(false),
    compression: compressionSchema.default(() => compressionSchema.parse({})),
  })
  .strict();

export const configSchema = z
  .object({
    // Keys of the seed system, same names and meanings.
    use_batch_embeddings: z.boolean().default(true),
    batch_embedding_size: z.number().int().min(1).max(50_000).default(50_000),
    max_requests_per_file: z.number().int().min(1).max(50_000).default(50_000),
    batch_manual_polling: z.boolean().default(true),
    batch_poll_interval: z.number().min(0).default(300),
    batch_max_wait_time: z.number().min(0).default(86_400),
    openai_api_key: z.string().min(1).nullable().default(null),

    // Ingest.
    work_dir: z.string().min(1).default('./embatch-work'),
    model: z.string().min(1).default('text-embedding-3-small'),
    // An OpenAI-compatible server's own model names are refused unless this is set (a typo would cost a day).
    allow_unknown_model: z.boolean().default(false),
    dimensions: z.number().int().min(1).max(65_535).nullable().default(null),
    encoding_format: z.enum(['float', 'base64']).default('base64'),
    embed_fields: commaList(z.string().min(1)).default(['composite', 'person', 'title', 'roles', 'subjects', 'genres']).refine((f) => f.length <= 65_536, 'can name at most 65,536 columns'),
    max_input_tokens: z.number().int().min(1).max(8192).default(8192),
    over_long_inputs: z.enum(['skip', 'truncate']).default('skip'),
    max_file_bytes: z.number().int().min(1024).max(209_715_200).default(200_000_000),
    input: inputSchema.default(() => inputSchema.parse({})),
    // LevelDB maps up to this many of its table files into memory: fewer caps the state store's share of RSS (the
    // mapped pages) but slows random reads (4.2x at 64 on a 4M-row store). null: see maxOpenFilesFor in store.ts.
    state_max_open_files: z.number().int().min(16).max(100_000).nullable().default(null),

    // OpenAI and the batch lifecycle.
    openai_base_url: z.string().url().nullable().default(null),
    request_timeout: z.number().positive().default(600),
    max_active_batches: z.number().int().min(1).default(16),
    enqueued_token_budget: z.number().int().min(1).default(20_000_000),
    enqueued_request_budget: z.number().int().min(1).default(1_000_000),
    max_batch_creations_per_hour: z.number().int().min(1).max(2000).default(2000),
    max_retry_attempts: z.number().int().min(0).default(3),
    queue_retry_delay: z.number().min(0).default(60),
    download_idle_timeout: z.number().positive().default(120),
    simulator: simulatorSchema.default(() => simulatorSchema.parse({})),
    weaviate: weaviateSchema.default(() => weaviateSchema.parse({})),
    realtime: realtimeSchema.default(() => realtimeSchema.parse({})),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.embed_fields.length === 0) ctx.addIssue({ code: 'custom', path: ['embed_fields'], message: 'must name at least one column' });
    if (new Set(c.embed_fields).size !== c.embed_fields.length)
      ctx.addIssue({ code: 'custom', path: ['embed_fields'], message: 'names a column twice' });
    if (!c.input.header && !c.input.columns)
      ctx.addIssue({ code: 'custom', path: ['input', 'columns'], message: 'is required when input.header is false' });
    if (!c.allow_unknown_model && !modelInfo(c.model))
      ctx.addIssue({ code: 'custom', path: ['model'], message: `"${c.model}" is not a known embedding model (${KNOWN_MODELS.join(', ')}); for an OpenAI-compatible server's own model set allow_unknown_model: true` });
    const dims = c.dimensions === null ? null : dimensionsProblem(c.model, c.dimensions);
    if (dims) ctx.addIssue({ code: 'custom', path: ['dimensions'], message: dims });
  });

export type Config = z.infer<typeof configSchema>;
/** A configuration as written (every key optional; defaults filled in by defineConfig or loadConfig). */
export type ConfigInput = z.input<typeof configSchema>;

/**
 * A configuration from an object, for library use: the keys of config.yml (nested), defaults for the rest, checked
 * like a config file (an unknown or bad key is a UsageError naming it). work_dir is made absolute against `cwd`.
 */
export function defineConfig(input: ConfigInput = {}, cwd = process.cwd()): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) throw configError(result.error, 'configuration');
  return { ...result.data, work_dir: path.resolve(cwd, result.data.work_dir) };
}
type Layer = Record<string, unknown>;

export interface ConfigSources {
  /** Path given with --config; when absent ./config.yml is used if it exists. */
  configPath?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Flat overrides from the command line, keyed by dotted config path (e.g. "input.delimiter"). */
  flags?: Record<string, unknown>;
  cwd?: string;
}

export interface LoadedConfig {
  config: Config;
  /** The config file actually read, if any. */
  file: string | undefined;
  /** Things worth telling the user that do not stop the command. */
  warnings: string[];
}

/** Environment variables the tool reads that are not config keys. */
const RESERVED_ENV = new Set(['EMBATCH_CONFIG']);

export function loadConfig(sources: ConfigSources = {}): LoadedConfig {
  const cwd = sources.cwd ?? process.cwd();
  const env = sources.env ?? process.env;
  const explicit = sources.configPath ?? env.EMBATCH_CONFIG;
  const file = path.resolve(cwd, explicit ?? 'config.yml');
  let fileLayer: Layer = {};
  let fileUsed: string | undefined;
  if (existsSync(file) && statSync(file).isFile()) {
    fileLayer = readConfigFile(file);
    fileUsed = file;
    // Relative paths in a config file are relative to the file, so a config works from any directory.
    if (typeof fileLayer.work_dir === 'string') fileLayer.work_dir = path.resolve(path.dirname(file), fileLayer.work_dir);
  } else if (explicit !== undefined) {
    throw new UsageError('CONFIG_NOT_FOUND', `config file ${file} does not exist (given with --config or EMBATCH_CONFIG)`);
  }

  const envLayer = envToLayer(env);
  const flagLayer: Layer = {};
  for (const [key, value] of Object.entries(sources.flags ?? {})) {
    if (value !== undefined) setPath(flagLayer, key.split('.'), value);
  }
  for (const layer of [envLayer, flagLayer]) {
    if (typeof layer.work_dir === 'string') layer.work_dir = path.resolve(cwd, layer.work_dir);
  }

  // Validate each layer on its own first, so an error names where the bad value came from.
  checkLayer(fileLayer, `config file ${fileUsed ?? ''}`);
  checkLayer(envLayer, 'environment');
  checkLayer(flagLayer, 'command line');

  const merged = deepMerge(deepMerge(fileLayer, envLayer), flagLayer);
  const result = configSchema.safeParse(merged);
  if (!result.success) throw configError(result.error, 'configuration');
  const config = result.data;
  if (!path.isAbsolute(config.work_dir)) config.work_dir = path.resolve(cwd, config.work_dir);
  const warnings: string[] = [];
  const secrets = [fileLayer.openai_api_key, (fileLayer.weaviate as Layer | undefined)?.api_key].filter((v) => typeof v === 'string' && v);
  if (fileUsed && secrets.length && (statSync(fileUsed).mode & 0o077) !== 0)
    warnings.push(`${fileUsed} holds an API key and can be read by other users; run chmod 600 ${fileUsed} (or keep the key in OPENAI_API_KEY)`);
  return { config, file: fileUsed, warnings };
}

function readConfigFile(file: string): Layer {
  let doc: unknown;
  try {
    doc = YAML.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError('CONFIG_PARSE', `${file}: not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError('CONFIG_PARSE', `${file}: must be a mapping of keys to values`);
  return doc as Layer;
}

/** OPENAI_API_KEY, OPENAI_BASE_URL and EMBATCH_<KEY> (nested keys joined by a double underscore: EMBATCH_INPUT__DELIMITER). */
function envToLayer(env: NodeJS.ProcessEnv): Layer {
  const layer: Layer = {};
  if (env.OPENAI_API_KEY) layer.openai_api_key = env.OPENAI_API_KEY;
  if (env.OPENAI_BASE_URL) layer.openai_base_url = env.OPENAI_BASE_URL;
  const weaviate: Layer = {};
  if (env.WEAVIATE_URL) weaviate.url = env.WEAVIATE_URL;
  if (env.WEAVIATE_GRPC_PORT) weaviate.grpc_port = coerceScalar(env.WEAVIATE_GRPC_PORT);
  if (env.WEAVIATE_API_KEY) weaviate.api_key = env.WEAVIATE_API_KEY;
  if (Object.keys(weaviate).length) layer.weaviate = weaviate;
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('EMBATCH_') || raw === undefined || RESERVED_ENV.has(name) || name.startsWith('EMBATCH_TEST_')) continue;
    const keyPath = name.slice('EMBATCH_'.length).toLowerCase().split('__');
    setPath(layer, keyPath, coerceScalar(raw));
  }
  return layer;
}

/** Flag and environment values arrive as text: read booleans, numbers and null the way YAML would. */
export function coerceScalar(raw: unknown): unknown {
  if (typeof raw !== 'string') return raw;
  const s = raw.trim();
  if (s === 'true') return true;
  if (s === 'false') return false;
  if (s === 'null' || s === '~') return null;
  if (/^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(s)) return Number(s);
  if (s.startsWith('[') && s.endsWith(']')) {
    try {
      return YAML.parse(s);
    } catch {
      return raw;
    }
  }
  return raw;
}

function checkLayer(layer: Layer, where: string): void {
  const partial = configSchema.safeParse(deepMerge(defaultsSkeleton(), layer));
  if (!partial.success) throw configError(partial.error, where);
}

/**
 * The smallest layer that passes the cross-field checks, so a layer is judged on its own keys only: the model checks
 * need the merged config (a model in the file, dimensions from a flag), so a layer without a model is not judged on them.
 */
function defaultsSkeleton(): Layer {
  return { input: { header: true }, model: 'layer-without-a-model', allow_unknown_model: true };
}

function configError(error: z.ZodError, where: string): UsageError {
  const lines = error.issues.map((issue) => {
    const key = issue.path.join('.') || '(top level)';
    if (issue.code === 'unrecognized_keys') {
      const keys = issue.keys.map((k) => (issue.path.length ? `${issue.path.join('.')}.${k}` : k));
      return `unknown key ${keys.join(', ')}`;
    }
    return `${key}: ${issue.message}`;
  });
  return new UsageError('CONFIG_INVALID', `invalid ${where}: ${lines.join('; ')}`);
}

function setPath(target: Layer, keys: string[], value: unknown): void {
  let node = target;
  keys.forEach((key, i) => {
    if (i === keys.length - 1) node[key] = value;
    else {
      if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
      node = node[key] as Layer;
    }
  });
}

function deepMerge(base: Layer, over: Layer): Layer {
  const out: Layer = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Layer {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

