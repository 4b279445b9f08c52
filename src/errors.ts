/**
 * One small error hierarchy. Every error a user can see carries a stable `code`, a message that says what to do, and
 * the underlying `cause` when it wraps another error. `exitCode` follows the CLI contract: 1 failure, 2 usage/config.
 */
export class EmbatchError extends Error {
  readonly code: string;
  readonly exitCode: 1 | 2;

  constructor(code: string, message: string, options: { cause?: unknown; exitCode?: 1 | 2 } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = options.exitCode ?? 1;
  }
}

/** A bad command line or configuration: exit code 2. */
export class UsageError extends EmbatchError {
  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { ...options, exitCode: 2 });
  }
}

/** Input data that cannot be read as configured; names the file, the line and the field where known. */
export class InputError extends EmbatchError {
  readonly file: string;
  readonly line: number | undefined;

  constructor(code: string, file: string, line: number | undefined, detail: string, options: { cause?: unknown } = {}) {
    super(code, `${file}${line === undefined ? '' : `:${line}`}: ${detail}`, options);
    this.file = file;
    this.line = line;
  }
}

/** The work directory's state is missing, locked or inconsistent. */
export class StateError extends EmbatchError {}

