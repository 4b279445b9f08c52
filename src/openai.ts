/**
 * The OpenAI client the commands use: the real `openai` SDK, pointed at `openai_base_url` / OPENAI_BASE_URL, or at an
 * in-process simulator with --simulate (its files and batches kept under <work_dir>/simulator, so later commands
 * with --simulate see the same batches).
 */
import OpenAI from 'openai';
import path from 'node:path';
import type { Config } from './config.js';
import { EmbatchError, UsageError } from './errors.js';
import { registerSecret } from './log.js';
import { startSimulator, type RunningSimulator, type SimulatorOptions } from './simulator/server.js';

export interface Api {
  client: OpenAI;
  /** The simulator serving this process, with --simulate. */
  simulator?: RunningSimulator;
  close(): Promise<void>;
}

/** A key the simulator accepts when none is configured; never a real credential. */
const SIMULATOR_KEY = 'sk-simulator-local';

export async function openApi(config: Config, opts: { simulate: boolean }): Promise<Api> {
  let simulator: RunningSimulator | undefined;
  let baseURL = config.openai_base_url ?? undefined;
  let apiKey = config.openai_api_key ?? undefined;
  if (opts.simulate) {
    simulator = await startSimulator(simulatorOptions(config, path.join(config.work_dir, 'simulator')));
    baseURL = simulator.baseURL;
    apiKey ??= config.simulator.api_key ?? SIMULATOR_KEY;
  }
  if (!apiKey) throw new UsageError('NO_API_KEY', 'no OpenAI API key: set OPENAI_API_KEY (or openai_api_key in the config), or add --simulate to use the built-in simulator');
  registerSecret(apiKey);
  const client = new OpenAI({ apiKey, baseURL, timeout: config.request_timeout * 1000, maxRetries: 4 });
  return { client, simulator, close: async () => simulator?.close() };
}

/** Turns an SDK error into one a user can act on, without the server's text where it could echo a credential. */
export function apiError(err: unknown, what: string): EmbatchError {
  if (err instanceof EmbatchError) return err;
  if (err instanceof OpenAI.AuthenticationError)
    return new EmbatchError('API_AUTH', `${what}: the API rejected the key (401). Check OPENAI_API_KEY or openai_api_key.`, { cause: undefined });
  if (err instanceof OpenAI.PermissionDeniedError) return new EmbatchError('API_FORBIDDEN', `${what}: permission denied (403): ${err.message}`, { cause: err });
  if (err instanceof OpenAI.RateLimitError && (err.code === 'insufficient_quota' || /quota/i.test(err.message)))
    return new EmbatchError('API_QUOTA', `${what}: the account has no quota left (insufficient_quota); add credit, then rerun`, { cause: err });
  if (err instanceof OpenAI.APIConnectionError) return new EmbatchError('API_UNREACHABLE', `${what}: cannot reach the API (${err.message}); rerun when it is reachable, nothing is lost`, { cause: err });
  if (err instanceof OpenAI.APIError) return new EmbatchError('API_ERROR', `${what}: the API answered ${err.status ?? 'with an error'}: ${err.message}`, { cause: err });
  return new EmbatchError('API_ERROR', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** The simulator's options from the `simulator:` config section (for --simulate and `embatch simulate`). */
export function simulatorOptions(config: Config, dir: string): SimulatorOptions {
  const s = config.simulator;
  return {
    dir,
    apiKey: s.api_key ?? undefined,
    engine: {
      validatingSeconds: s.validating_seconds,
      linesPerSecond: s.lines_per_second,
      finalizingSeconds: s.finalizing_seconds,
      completionWindowSeconds: s.completion_window_seconds,
      enqueuedTokenLimit: s.enqueued_token_limit ?? Number.POSITIVE_INFINITY,
      enqueuedRequestLimit: s.enqueued_request_limit,
      lineServerErrorRate: s.line_server_error_rate,
      lineBadRequestRate: s.line_bad_request_rate,
    },
    faults: { rate429: s.rate_429, rate500: s.rate_500, rateReset: s.rate_reset, rateStall: s.rate_stall, rateTruncate: s.rate_truncate, truncateFirstDownloads: s.truncate_first_downloads },
    limits: { rpm: s.rpm, tpm: s.tpm, quotaTokens: s.quota_tokens, rejectInputsContaining: s.reject_inputs_containing, omitInputsContaining: s.omit_inputs_containing },
  };
}
