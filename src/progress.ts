import cliProgress from 'cli-progress';
import { log } from './log.js';

export interface Progress {
  update(value: number, detail?: string): void;
  stop(): void;
}

/**
 * A progress bar on a terminal; on a pipe, a plain line every `intervalMs`; nothing at all with --json or --quiet.
 * `total` may be unknown (stdin), in which case only the count is shown.
 */
export function createProgress(opts: { label: string; total?: number; unit: 'bytes' | 'items'; enabled: boolean; intervalMs?: number }): Progress {
  if (!opts.enabled) return { update() {}, stop() {} };
  const fmt = (n: number) => (opts.unit === 'bytes' ? `${(n / 1e6).toFixed(1)} MB` : n.toLocaleString('en-US'));
  if (process.stderr.isTTY && opts.total) {
    const bar = new cliProgress.SingleBar(
      { format: `${opts.label} [{bar}] {percentage}% | {done} of {all} | ETA {eta_formatted} | {detail}`, hideCursor: true, stream: process.stderr, etaBuffer: 50 },
      cliProgress.Presets.shades_classic,
    );
    bar.start(opts.total, 0, { done: fmt(0), all: fmt(opts.total), detail: '' });
    return {
      update(value, detail = '') {
        bar.update(Math.min(value, opts.total!), { done: fmt(value), all: fmt(opts.total!), detail });
      },
      stop() {
        bar.stop();
      },
    };
  }
  const every = opts.intervalMs ?? 10_000;
  const started = Date.now();
  let last = started;
  return {
    update(value, detail = '') {
      const now = Date.now();
      if (now - last < every) return;
      last = now;
      const pct = opts.total ? ` (${((100 * value) / opts.total).toFixed(1)}%)` : '';
      const etaSeconds = opts.total && value > 0 ? ((opts.total - value) * (now - started)) / value / 1000 : NaN;
      const eta = Number.isFinite(etaSeconds) ? ` | ETA ${etaSeconds < 120 ? `${Math.round(etaSeconds)}s` : `${Math.round(etaSeconds / 60)}m`}` : '';
      log.info(`${opts.label}: ${fmt(value)}${pct}${eta}${detail ? ` | ${detail}` : ''}`);
    },
    stop() {},
  };
}
