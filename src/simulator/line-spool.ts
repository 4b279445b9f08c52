import { once } from 'node:events';
import { closeSync, createReadStream, createWriteStream, openSync, readSync, type WriteStream } from 'node:fs';

/**
 * Lines spooled to a scratch file in the order they come, with where each lies (a few numbers per line: a batch's
 * 50,000 lines hold well under a megabyte), then written out in a seeded full shuffle, one read per line: a full
 * shuffle without holding the lines. The simulator writes result files through it (OpenAI keeps no order), and the
 * results bench makes its shuffled files with it.
 */
export class LineSpool {
  readonly #file: string;
  readonly #out: WriteStream | undefined;
  #at = 0;
  readonly #offsets: number[] = [];
  readonly #lengths: number[] = [];
  readonly #ok: boolean[] = [];

  /** A spool written to `file` with add(); `write: false` for one over a file that exists (see over()). */
  constructor(file: string, write = true) {
    this.#file = file;
    this.#out = write ? createWriteStream(file, { mode: 0o600 }) : undefined;
  }

  /** The lines of an existing file (each counted as `ok`), found by one streamed read. */
  static async over(file: string): Promise<LineSpool> {
    const spool = new LineSpool(file, false);
    let start = 0;
    let at = 0;
    for await (const chunk of createReadStream(file)) {
      const bytes = chunk as Buffer;
      for (let nl = bytes.indexOf(10); nl !== -1; nl = bytes.indexOf(10, nl + 1)) {
        spool.#note(true, start, at + nl + 1 - start);
        start = at + nl + 1;
      }
      at += bytes.length;
    }
    if (start < at) spool.#note(true, start, at - start);
    return spool;
  }

  #note(ok: boolean, offset: number, length: number): void {
    this.#offsets.push(offset);
    this.#lengths.push(length);
    this.#ok.push(ok);
  }

  async add(ok: boolean, line: string): Promise<void> {
    const bytes = Buffer.from(line + '\n');
    this.#note(ok, this.#at, bytes.length);
    this.#at += bytes.length;
    if (!this.#out!.write(bytes)) await once(this.#out!, 'drain');
  }

  async close(): Promise<void> {
    const out = this.#out!;
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  }

  /** Writes the lines, shuffled (Fisher-Yates over a seeded generator), to `okPath` and `failedPath` by kind. */
  async shuffleInto(okPath: string, failedPath: string, seed: number): Promise<{ ok: number; failed: number }> {
    const order = Array.from(this.#offsets.keys());
    let x = seed >>> 0 || 1;
    for (let i = order.length - 1; i > 0; i--) {
      x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
      const j = x % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const ok = createWriteStream(okPath, { mode: 0o600 });
    const failed = createWriteStream(failedPath, { mode: 0o600 });
    const counts = { ok: 0, failed: 0 };
    const fd = openSync(this.#file, 'r');
    try {
      for (const i of order) {
        const buf = Buffer.allocUnsafe(this.#lengths[i]!);
        readSync(fd, buf, 0, buf.length, this.#offsets[i]!);
        const target = this.#ok[i] ? ok : failed;
        if (this.#ok[i]) counts.ok++;
        else counts.failed++;
        if (!target.write(buf)) await once(target, 'drain');
      }
    } finally {
      closeSync(fd);
      await Promise.all([ok, failed].map((s) => new Promise<void>((r) => s.end(() => r()))));
    }
    return counts;
  }
}

