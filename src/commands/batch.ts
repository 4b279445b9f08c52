import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Argv, CommandModule } from 'yargs';
import type { Ctx, StatusReport } from '../batches.js';
import type { Config } from '../config.js';
import { UsageError } from '../errors.js';
import { log, printJson } from '../log.js';
import type { StateStore } from '../store.js';
import { configFromArgs, exitOnLedger, modelFlags, modelOptions, num, usd, type CommonArgs } from './common.js';
import { printPrepareSummary, stdinOrPath } from './prepare.js';
import { printIndexSummary } from './results.js';

interface ApiArgs extends CommonArgs {
  simulate: boolean;
}

const simulateOption = <T>(y: Argv<T>) =>
  y.option('simulate', { type: 'boolean', default: false, describe: 'Use the built-in OpenAI simulator (no account, no network); its state is kept in <work_dir>/simulator' });

/** The lifecycle's implementation, loaded when a command needs it (keeps start-up light for the others). */
const lifecycle = () => import('../batches.js');

/** Opens the store and the API for a command, and closes both whatever happens. */
async function withCtx<T>(args: ApiArgs, config: Config, fn: (ctx: Ctx) => Promise<T>): Promise<T> {
  const { StateStore } = await import('../store.js');
  const { openApi } = await import('../openai.js');
  const store = await StateStore.open(config.work_dir, { maxOpenFiles: config.state_max_open_files });
  try {
    const api = await openApi(config, { simulate: args.simulate });
    try {
      return await fn({ store, api, config });
    } finally {
      await api.close();
    }
  } finally {
    await store.close();
  }
}

export const submitCommand: CommandModule<CommonArgs, ApiArgs> = {
  command: 'submit',
  describe: 'Upload pending request files and create batches, within the queue budgets',
  builder: (y) => simulateOption(y) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const { submitQueued } = await lifecycle();
    const s = await withCtx(args, config, (ctx) => submitQueued(ctx));
    if (args.json) printJson({ command: 'submit', ...s });
    else log.info(`submitted ${s.submitted} batch(es)${s.queued ? `; ${s.queued} file(s) wait: ${s.waitingReason}` : ''}\nnext: embatch status`);
  },
};

export const statusCommand: CommandModule<CommonArgs, ApiArgs & { offline: boolean; sink?: string }> = {
  command: 'status',
  describe: 'Show every batch job (status, progress, age, time left, tokens, cost), the ledger of strings and objects, and what to do next',
  builder: (y) =>
    simulateOption(y)
      .option('offline', { type: 'boolean', default: false, describe: 'Show the stored state without asking the API' })
      .option('sink', { type: 'string', describe: 'The sink target whose objects the ledger counts: weaviate (default), jsonl:<path>' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const { refreshActive, statusReport } = await lifecycle();
    const { parseSink, sinkLabel } = await import('../results.js');
    const target = sinkLabel(parseSink(args.sink), config);
    const report = args.offline
      ? await withStore(config, (store) => statusReport({ store, config }, 1000, target))
      : await withCtx(args, config, async (ctx) => {
          await refreshActive(ctx);
          return statusReport(ctx, 1000, target);
        });
    if (args.json) printJson({ command: 'status', ...report });
    else printStatus(report);
  },
};

export const downloadCommand: CommandModule<CommonArgs, ApiArgs> = {
  command: 'download',
  describe: 'Download the output and error files of ended batches into <work_dir>/results',
  builder: (y) => simulateOption(y) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const { refreshActive, downloadEnded } = await lifecycle();
    const { readLedger } = await import('../ledger.js');
    const { sinkLabel } = await import('../results.js');
    const { s, ledger } = await withCtx(args, config, async (ctx) => {
      await refreshActive(ctx);
      const s = await downloadEnded(ctx);
      return { s, ledger: await readLedger(ctx.store, sinkLabel({ kind: 'weaviate' }, config), config.max_retry_attempts) };
    });
    if (args.json) printJson({ command: 'download', ...s, ...ledger });
    else
      log.info(
        `downloaded ${s.files} file(s): ${num(s.embedded)} results, ${num(s.failedLines)} failed lines${s.redownloads ? ` (${s.redownloads} incomplete download(s) redone)` : ''}` +
          (s.missingLines || s.unmatchedErrorLines ? `; ${num(s.missingLines)} request(s) with no line at all (recorded as failed), ${num(s.unmatchedErrorLines)} error line(s) naming no request` : ''),
      );
    exitOnLedger(ledger, 'embedded');
  },
};

export const retryCommand: CommandModule<CommonArgs, CommonArgs> = {
  command: 'retry',
  describe: 'Write new request files from lines that failed for retryable reasons (rate limit, server error, expired, cancelled)',
  handler: async (args) => {
    const config = configFromArgs(args);
    const { createRetryFiles } = await lifecycle();
    const s = await withStore(config, (store) => createRetryFiles({ store, config }));
    if (args.json) printJson({ command: 'retry', ...s });
    else {
      log.info(`${num(s.requeued)} string(s) queued again in ${s.files.length} file(s)${s.files.length ? '; next: embatch submit' : ''}`);
      if (s.exhausted) log.warn(`${num(s.exhausted)} string(s) failed more than max_retry_attempts (${config.max_retry_attempts}) times and are not retried`);
      if (s.permanent) {
        log.warn(`${num(s.permanent)} string(s) failed permanently (the request itself was rejected); for example:`);
        for (const p of s.permanentSamples) log.info(`  ${p.customId}: ${p.code}: ${p.message}`);
      }
    }
    // Strings failed for good stay failed: the retry went as far as it can, but not everything will be embedded.
    if (s.permanent || s.exhausted) process.exitCode = 1;
  },
};

export const cancelCommand: CommandModule<CommonArgs, ApiArgs & { batch?: string }> = {
  command: 'cancel [batch]',
  describe: 'Cancel one active batch, or all of them; finished lines are kept and can be downloaded',
  builder: (y) => simulateOption(y).positional('batch', { type: 'string', describe: 'Batch id (default: every active batch)' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const { cancelBatches } = await lifecycle();
    const s = await withCtx(args, config, (ctx) => cancelBatches(ctx, args.batch));
    if (args.json) printJson({ command: 'cancel', ...s });
    else {
      if (s.alreadyEnded.length) log.info(`already ended, not cancelled: ${s.alreadyEnded.join(', ')}`);
      log.info(s.cancelled.length ? `cancelling ${s.cancelled.join(', ')}; then: embatch download, embatch retry` : 'no active batch to cancel');
    }
  },
};

export const resetCommand: CommandModule<CommonArgs, CommonArgs & { yes: boolean }> = {
  command: 'reset',
  describe: 'Delete the work directory: state, request and result files (asks first unless --yes)',
  builder: (y) => y.option('yes', { type: 'boolean', default: false, describe: 'Do not ask' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const dir = config.work_dir;
    if (!existsSync(dir)) return log.info(`nothing to reset: ${dir} does not exist`);
    if (!existsSync(path.join(dir, 'state', 'CURRENT')))
      throw new UsageError('RESET_NOT_WORKDIR', `${dir} does not look like an embatch work directory (no state/ in it); not deleting it`);
    const { statusReport } = await lifecycle();
    const report = await withStore(config, (store) => statusReport({ store, config }));
    if (report.totals.active) log.warn(`${report.totals.active} batch(es) are still running at OpenAI and will be billed; run embatch cancel first to stop them`);
    if (!args.yes) {
      if (!process.stdin.isTTY) throw new UsageError('RESET_NEEDS_YES', `reset deletes ${dir}; add --yes to confirm when not on a terminal`);
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      const answer = await rl.question(`Delete ${dir} with all its state, request and result files? Type yes: `);
      rl.close();
      if (answer.trim() !== 'yes') return log.info('not reset');
    }
    for (const name of readdirSync(dir)) rmSync(path.join(dir, name), { recursive: true, force: true });
    log.info(`reset ${dir}`);
  },
};

interface RunArgs extends ApiArgs {
  input?: string;
  source?: string;
  model?: string;
  dimensions?: number;
  'encoding-format'?: string;
  'embed-fields'?: string;
  wait?: boolean;
  sink?: string;
  realtime?: boolean;
}

export const runCommand: CommandModule<CommonArgs, RunArgs> = {
  command: 'run [input]',
  describe: 'The whole pipeline: prepare (if a CSV is given), submit, then poll, download and retry until done (or stop after submitting with batch_manual_polling)',
  builder: (y) =>
    modelOptions(simulateOption(y))
      .positional('input', { type: 'string', describe: 'CSV file, or - for stdin; without it, continue with what is prepared' })
      .option('source', { type: 'string', describe: 'Name under which stdin counts are kept' })
      .option('wait', { type: 'boolean', describe: 'Poll until done (batch_manual_polling: false); --no-wait stops after submitting' })
      .option('sink', { type: 'string', describe: 'Where results go as batches end: weaviate (default), jsonl, jsonl:<path>, or none' })
      .option('realtime', { type: 'boolean', describe: 'Use the real-time embeddings endpoint at the account rate limits (use_batch_embeddings: false)' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args, {
      ...modelFlags(args),
      batch_manual_polling: args.wait === undefined ? undefined : !args.wait,
      use_batch_embeddings: args.realtime === undefined ? undefined : !args.realtime,
    });
    const result = await runPipeline(config, args);
    if (args.json) printJson({ command: 'run', ...result });
    else printStatus(result.status);
    // Not done: polling gave up, or (real time) some strings failed; both need the user's attention. So does a ledger
    // with strings failed for good or objects the sink did not take: an exit code of 0 means nothing failed.
    const waited = !config.batch_manual_polling || result.realtime !== undefined;
    if (waited) {
      if (!result.done) process.exitCode = 1;
      exitOnLedger(result.status, args.sink === 'none' ? 'embedded' : 'indexed');
    } else if (result.status.objects.refused > 0) exitOnLedger(result.status, 'indexed');
  },
};

export interface RunResult {
  done: boolean;
  interrupted: boolean;
  status: StatusReport;
  realtime?: import('../realtime.js').RealtimeSummary;
  /** What this run indexed, over all its rounds. */
  indexed: IndexTotals;
}

export interface IndexTotals {
  files: number;
  objects: number;
  acked: number;
  rejected: number;
  alreadyIndexed: number;
}

function addIndexed(totals: IndexTotals, s: import('../results.js').IndexSummary | null): void {
  if (!s) return;
  for (const k of Object.keys(totals) as Array<keyof IndexTotals>) totals[k] += s[k];
}

export async function runPipeline(config: Config, args: RunArgs): Promise<RunResult> {
  const indexedTotals: IndexTotals = { files: 0, objects: 0, acked: 0, rejected: 0, alreadyIndexed: 0 };
  const { refreshActive, downloadEnded, statusReport, createRetryFiles, submitQueued } = await lifecycle();
  const { indexDownloaded, parseSink, sinkLabel } = await import('../results.js');
  const target = sinkLabel(parseSink(args.sink === 'none' ? undefined : args.sink), config);
  if (args.input !== undefined) {
    const { prepare } = await import('../prepare.js');
    const summary = await prepare(config, { input: stdinOrPath(args.input), sourceName: args.source, showProgress: !args.json && !args.quiet });
    if (!args.json) printPrepareSummary(summary);
  }
  if (!config.use_batch_embeddings) {
    const { runRealtime } = await import('../realtime.js');
    return withCtx(args, config, async (ctx) => {
      const realtime = await runRealtime(ctx, { showProgress: !args.json && !args.quiet });
      if (args.sink !== 'none') {
        const indexed = await indexDownloaded(config, ctx.store, args.sink);
        addIndexed(indexedTotals, indexed);
        if (indexed && !args.json) printIndexSummary(indexed);
      }
      const status = await statusReport(ctx, 1000, target);
      if (!args.json)
        log.info(`real time: ${num(realtime.embedded)} embedded (${num(realtime.alreadyEmbedded)} already), ${num(realtime.failed)} failed, ${num(realtime.requests)} requests, ${num(Math.round(realtime.tokensPerMinute))} tokens/min, ${realtime.rateLimited} rate-limited answers, ${usd(realtime.costUsd)}`);
      return { done: realtime.failed === 0, interrupted: false, status, realtime, indexed: indexedTotals };
    });
  }
  const stop = new AbortController();
  const onSignal = () => {
    log.info('\ninterrupted: finishing the current step; everything done so far is kept, rerun `embatch run` to go on');
    stop.abort();
  };
  process.once('SIGINT', onSignal);
  try {
    return await withCtx(args, config, async (ctx) => {
      const started = Date.now();
      for (;;) {
        await refreshActive(ctx);
        await downloadEnded(ctx);
        if (args.sink !== 'none') {
          const indexed = await indexDownloaded(config, ctx.store, args.sink);
          addIndexed(indexedTotals, indexed);
          if (indexed && !args.json) printIndexSummary(indexed);
        }
        const report = await statusReport(ctx, 0, target);
        if (!config.batch_manual_polling && report.failures.failedRetryable > 0 && report.totals.active === 0 && report.totals.ended === 0) {
          const retry = await createRetryFiles(ctx);
          if (retry.requeued) log.info(`retrying ${num(retry.requeued)} failed string(s)`);
        }
        const submitted = await submitQueued(ctx);
        const now = await statusReport(ctx, 1000, target);
        const done = now.totals.queued === 0 && now.totals.active === 0 && now.totals.ended === 0 && (config.batch_manual_polling || now.failures.failedRetryable === 0);
        if (config.batch_manual_polling) {
          if (!args.json) log.info(`submitted ${submitted.submitted} batch(es). Check later with: embatch status, then embatch download (or embatch run to wait)`);
          return { done, interrupted: false, status: now, indexed: indexedTotals };
        }
        if (done) return { done: true, interrupted: false, status: now, indexed: indexedTotals };
        if (stop.signal.aborted) return { done: false, interrupted: true, status: now, indexed: indexedTotals };
        if (Date.now() - started > config.batch_max_wait_time * 1000) {
          log.warn(`batch_max_wait_time (${config.batch_max_wait_time} s) passed with batches still running; they go on at OpenAI: rerun embatch run or embatch status later`);
          return { done: false, interrupted: false, status: now, indexed: indexedTotals };
        }
        if (!args.json) log.info(`${now.totals.active} batch(es) running, ${now.totals.queued} queued; next check in ${config.batch_poll_interval} s`);
        try {
          await sleep(config.batch_poll_interval * 1000, undefined, { signal: stop.signal });
        } catch {
          return { done: false, interrupted: true, status: now, indexed: indexedTotals };
        }
      }
    });
  } finally {
    process.removeListener('SIGINT', onSignal);
  }
}

export const simulateCommand: CommandModule<CommonArgs, CommonArgs & { port: number; host: string; dir?: string }> = {
  command: 'simulate',
  describe: 'Run the OpenAI-compatible simulator (Files, Batches, Embeddings) until Ctrl-C',
  builder: (y) =>
    y
      .option('port', { type: 'number', default: 8787, describe: 'Port to listen on' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'Address to listen on' })
      .option('dir', { type: 'string', describe: 'Where it keeps files and batches (default <work_dir>/simulator)' }) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const { startSimulator } = await import('../simulator/server.js');
    const { simulatorOptions } = await import('../openai.js');
    const sim = await startSimulator(
      simulatorOptions(config, args.dir ?? path.join(config.work_dir, 'simulator')),
      args.port,
      args.host,
    );
    log.info(`OpenAI simulator listening on ${sim.baseURL} (point OPENAI_BASE_URL there); Ctrl-C stops it`);
    if (args.json) printJson({ command: 'simulate', baseURL: sim.baseURL });
    await new Promise<void>((resolve) => process.once('SIGINT', resolve));
    await sim.close();
  },
};

async function withStore<T>(config: Config, fn: (store: StateStore) => Promise<T>): Promise<T> {
  const { StateStore } = await import('../store.js');
  const store = await StateStore.open(config.work_dir, { maxOpenFiles: config.state_max_open_files });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const dur = (s: number | null) => (s === null ? '-' : s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${(s / 3600).toFixed(1)}h`);

/** The ledger in one line: every string in exactly one state. */
function ledgerLine({ strings: l }: StatusReport): string {
  const parts: Array<[string, number]> = [['skipped', l.skipped], ['pending', l.pending], ['submitted', l.submitted], ['embedded', l.embedded], ['indexed', l.indexed], ['failed (retryable)', l.failed_retryable], ['failed (permanent)', l.failed_permanent]];
  return `strings: ${num(l.total)} = ${parts.map(([name, n]) => `${num(n)} ${name}`).join(' + ')}`;
}

export function printStatus(r: StatusReport): void {
  const rows = r.jobs.map((j) =>
    [String(j.seq).padStart(5), (j.batchId ?? '-').padEnd(30), (j.status ?? j.state).padEnd(11), `${num(j.completed)}/${num(j.failed)}/${num(j.total)}`.padStart(20), dur(j.ageSeconds).padStart(6), dur(j.etaSeconds).padStart(6), num(j.tokens).padStart(12), usd(j.costUsd).padStart(9), j.retry ? ' retry' : '', j.error ? `  ${j.error}` : ''].join(' '),
  );
  const t = r.totals;
  log.info(
    [
      `${'file'.padStart(5)} ${'batch'.padEnd(30)} ${'status'.padEnd(11)} ${'done/failed/total'.padStart(20)} ${'age'.padStart(6)} ${'left'.padStart(6)} ${'tokens'.padStart(12)} ${'cost'.padStart(9)}`,
      ...rows,
      `total: ${t.files} file(s): ${t.queued} queued, ${t.active} running, ${t.ended} to download, ${t.downloaded} downloaded; ${num(t.completed)} of ${num(t.requests)} requests done, ${num(t.failed)} failed; ${num(t.tokens)} tokens, ${usd(t.costUsd)} at batch prices`,
      ledgerLine(r),
      `objects in ${r.objects.target}: ${num(r.objects.indexed)} of ${num(r.objects.total)} indexed${r.objects.refused ? `, ${num(r.objects.refused)} refused (see index_rejects.jsonl)` : ''}`,
      r.failures.failedRetryable || r.failures.failedPermanent || r.failures.failedExhausted || r.failures.queuedForRetry
        ? `failed strings: ${num(r.failures.failedRetryable)} retryable, ${num(r.failures.queuedForRetry)} queued for retry, ${num(r.failures.failedPermanent)} permanent, ${num(r.failures.failedExhausted)} out of attempts`
        : '',
      `next: ${r.next}`,
    ]
      .filter(Boolean)
      .join('\n'),
  );
}

