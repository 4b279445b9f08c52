import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import type { Argv, CommandModule } from 'yargs';
import type { RunEvent, RunResult } from '../api.js';
import type { StatusReport } from '../batches.js';
import { UsageError } from '../errors.js';
import { log, printJson } from '../log.js';
import { configFromArgs, exitOnLedger, modelFlags, modelOptions, num, usd, type CommonArgs } from './common.js';
import { printPrepareSummary, stdinOrPath } from './prepare.js';
import { printIndexSummary } from './results.js';

interface ApiArgs extends CommonArgs {
  simulate: boolean;
}

const simulateOption = <T>(y: Argv<T>) =>
  y.option('simulate', { type: 'boolean', default: false, describe: 'Use the built-in OpenAI simulator (no account, no network); its state is kept in <work_dir>/simulator' });

/** The API, loaded when a command runs (keeps start-up light). */
const api = () => import('../api.js');

export const submitCommand: CommandModule<CommonArgs, ApiArgs> = {
  command: 'submit',
  describe: 'Upload pending request files and create batches, within the queue budgets',
  builder: (y) => simulateOption(y) as never,
  handler: async (args) => {
    const config = configFromArgs(args);
    const s = await (await api()).submit(config, { simulate: args.simulate });
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
    const report = await (await api()).status(config, { simulate: args.simulate, offline: args.offline, sink: args.sink });
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
    const s = await (await api()).download(config, { simulate: args.simulate });
    if (args.json) printJson({ command: 'download', ...s });
    else
      log.info(
        `downloaded ${s.files} file(s): ${num(s.embedded)} results, ${num(s.failedLines)} failed lines${s.redownloads ? ` (${s.redownloads} incomplete download(s) redone)` : ''}` +
          (s.missingLines || s.unmatchedErrorLines ? `; ${num(s.missingLines)} request(s) with no line at all (recorded as failed), ${num(s.unmatchedErrorLines)} error line(s) naming no request` : ''),
      );
    exitOnLedger(s, 'embedded');
  },
};

export const retryCommand: CommandModule<CommonArgs, CommonArgs> = {
  command: 'retry',
  describe: 'Write new request files from lines that failed for retryable reasons (rate limit, server error, expired, cancelled)',
  handler: async (args) => {
    const config = configFromArgs(args);
    const s = await (await api()).retry(config);
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
    const s = await (await api()).cancel(config, { simulate: args.simulate, batch: args.batch });
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
    const report = await (await api()).status(config, { offline: true });
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
    const { runPipeline } = await api();
    const stop = new AbortController();
    const onSignal = () => {
      log.info('\ninterrupted: finishing the current step; everything done so far is kept, rerun `embatch run` to go on');
      stop.abort();
    };
    // Ctrl-C ends the polling loop gently; before it (prepare, real time) it stops the process as usual.
    const polling = config.use_batch_embeddings;
    if (polling && args.input === undefined) process.once('SIGINT', onSignal);
    let result: RunResult;
    try {
      result = await runPipeline(config, {
        input: args.input === undefined ? undefined : stdinOrPath(args.input),
        sourceName: args.source,
        sink: args.sink,
        simulate: args.simulate,
        showProgress: !args.json && !args.quiet,
        signal: stop.signal,
        onEvent: (e) => {
          if (polling && e.type === 'prepared') process.once('SIGINT', onSignal);
          if (!args.json) printRunEvent(e);
        },
      });
    } finally {
      process.removeListener('SIGINT', onSignal);
    }
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

/** A run's progress, as lines on stderr. */
function printRunEvent(e: RunEvent): void {
  switch (e.type) {
    case 'prepared':
      return printPrepareSummary(e.summary);
    case 'indexed':
      return printIndexSummary(e.summary);
    case 'realtime': {
      const r = e.summary;
      return log.info(`real time: ${num(r.embedded)} embedded (${num(r.alreadyEmbedded)} already), ${num(r.failed)} failed, ${num(r.requests)} requests, ${num(Math.round(r.tokensPerMinute))} tokens/min, ${r.rateLimited} rate-limited answers, ${usd(r.costUsd)}`);
    }
    case 'retrying':
      return log.info(`retrying ${num(e.strings)} failed string(s)`);
    case 'submitted':
      if (e.manualPolling) log.info(`submitted ${e.batches} batch(es). Check later with: embatch status, then embatch download (or embatch run to wait)`);
      return;
    case 'waiting':
      return log.info(`${e.active} batch(es) running, ${e.queued} queued; next check in ${e.nextCheckSeconds} s`);
    case 'max-wait':
      return log.warn(`batch_max_wait_time (${e.seconds} s) passed with batches still running; they go on at OpenAI: rerun embatch run or embatch status later`);
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
    const { startSimulator, simulatorOptions } = await api();
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

