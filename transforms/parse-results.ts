import split2 from 'split2';
import type { Transform } from 'node:stream';

/** One line of a result file: its number, and the parsed JSON or why it could not be parsed. */
export interface ParsedLine {
  file: string;
  line: number;
  json?: unknown;
  corrupt?: string;
}

/** The longest line accepted: a 3,072-dimension float embedding is about 70 KB; anything far larger is corrupt. */
export const MAX_RESULT_LINE = 16 * 1024 * 1024;

/**
 * Result JSONL to parsed lines, numbered. split2 with a string matcher and JSON.parse per line was the fastest parser
 * measured here (streams-perf.md §3); a line that is not JSON becomes a `corrupt` item, never a crash or a silent drop.
 */
export function parseResults(file: string): Transform {
  let line = 0;
  return split2(
    '\n',
    (text: string): ParsedLine | undefined => {
      line++;
      const t = text.endsWith('\r') ? text.slice(0, -1) : text;
      if (!t.trim()) return undefined;
      try {
        return { file, line, json: JSON.parse(t) };
      } catch (err) {
        return { file, line, corrupt: `not valid JSON (${(err as Error).message.slice(0, 80)})` };
      }
    },
    { maxLength: MAX_RESULT_LINE },
  );
}
