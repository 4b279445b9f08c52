/**
 * Everything the tool prints goes through here, to stderr (stdout is kept for --json and piped data), and every
 * line passes through redact(): an API key registered at start-up never reaches a terminal, log or error message.
 */
const secrets = new Set<string>();

export function registerSecret(secret: string | null | undefined): void {
  if (secret && secret.length >= 6) secrets.add(secret);
}

export function redact(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('[redacted]');
  return out;
}

let quiet = false;
export function setQuiet(value: boolean): void {
  quiet = value;
}

export const log = {
  info(message: string): void {
    if (!quiet) process.stderr.write(redact(message) + '\n');
  },
  warn(message: string): void {
    process.stderr.write(redact(`warning: ${message}`) + '\n');
  },
  error(message: string): void {
    process.stderr.write(redact(`error: ${message}`) + '\n');
  },
};

/** Writes a machine-readable result to stdout (for --json), redacted like everything else. */
export function printJson(value: unknown): void {
  process.stdout.write(redact(JSON.stringify(value, null, 2)) + '\n');
}
