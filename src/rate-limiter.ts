/**
 * Client-side rate limiting for the real-time endpoint: token buckets for requests per minute, tokens per minute and
 * (optionally) tokens per day. Capacity is reserved before a request is sent, never checked afterwards, so concurrent
 * requests cannot overshoot together. The buckets follow what the API reports (x-ratelimit-remaining-*, reset) and
 * pause everyone after a 429.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** Where the limiter reads the time and waits: the process's clock, or a test's. */
export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

const realClock: Clock = { now: () => performance.now(), sleep: (ms, signal) => sleep(ms, undefined, { signal }) };

class Bucket {
  #level: number;
  #at: number;

  /** `perMs` refill rate; `capacity` the most that can be spent at once. */
  constructor(
    readonly perMs: number,
    readonly capacity: number,
    readonly clock: Clock,
  ) {
    this.#level = capacity;
    this.#at = clock.now();
  }

  level(): number {
    const now = this.clock.now();
    this.#level = Math.min(this.capacity, this.#level + (now - this.#at) * this.perMs);
    this.#at = now;
    return this.#level;
  }

  /** Milliseconds until `n` fit. A request larger than the capacity waits for a full bucket and then goes. */
  waitFor(n: number): number {
    const missing = Math.min(n, this.capacity) - this.level();
    return missing <= 0 ? 0 : missing / this.perMs;
  }

  take(n: number): void {
    this.level();
    this.#level -= n;
  }

  /** The server says fewer are left than this bucket thinks: believe the server. */
  lowerTo(remaining: number): void {
    if (remaining < this.level()) this.#level = remaining;
  }
}

export interface LimiterOptions {
  rpm: number;
  tpm: number;
  tpd: number | null;
  /** How much of a minute's allowance may go out at once (servers enforce limits in slices shorter than a minute). */
  burstSeconds: number;
}

export class RateLimiter {
  readonly #requests: Bucket;
  readonly #tokens: Bucket;
  readonly #day: Bucket | undefined;
  #pausedUntil = 0;

  readonly #clock: Clock;

  /** `usedToday`: tokens already spent today by earlier runs, so the daily cap holds across runs. */
  constructor(
    readonly options: LimiterOptions,
    usedToday = 0,
    clock: Clock = realClock,
  ) {
    this.#clock = clock;
    const slice = Math.max(options.burstSeconds, 1) / 60;
    this.#requests = new Bucket(options.rpm / 60_000, Math.max(1, options.rpm * slice), clock);
    this.#tokens = new Bucket(options.tpm / 60_000, Math.max(1, options.tpm * slice), clock);
    this.#day = options.tpd ? new Bucket(options.tpd / 86_400_000, options.tpd, clock) : undefined;
    if (usedToday) this.#day?.take(usedToday);
  }

  /** Waits until one request of `tokens` tokens fits every limit, then takes that capacity. */
  async reserve(tokens: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      const wait = Math.max(this.#pausedUntil - this.#clock.now(), this.#requests.waitFor(1), this.#tokens.waitFor(tokens), this.#day?.waitFor(tokens) ?? 0);
      if (wait <= 0) {
        this.#requests.take(1);
        this.#tokens.take(tokens);
        this.#day?.take(tokens);
        return;
      }
      await this.#clock.sleep(Math.min(wait, 1000), signal);
    }
  }

  /** After a 429: nobody sends until `ms` from now. */
  pause(ms: number): void {
    this.#pausedUntil = Math.max(this.#pausedUntil, this.#clock.now() + ms);
  }

  /** Adapts to the x-ratelimit-* headers of a response. */
  observe(headers: Headers): void {
    const remainingTokens = Number(headers.get('x-ratelimit-remaining-tokens'));
    const remainingRequests = Number(headers.get('x-ratelimit-remaining-requests'));
    if (headers.get('x-ratelimit-remaining-tokens') !== null && Number.isFinite(remainingTokens)) this.#tokens.lowerTo(remainingTokens);
    if (headers.get('x-ratelimit-remaining-requests') !== null && Number.isFinite(remainingRequests)) this.#requests.lowerTo(remainingRequests);
  }
}

/** "12ms", "1.5s", "2m3s" (x-ratelimit-reset-*) or seconds (retry-after) to milliseconds. */
export function parseDuration(text: string | null): number | undefined {
  if (!text) return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  let ms = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let m: RegExpExecArray | null;
  let matched = false;
  while ((m = re.exec(text))) {
    matched = true;
    ms += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  }
  return matched ? ms : undefined;
}
