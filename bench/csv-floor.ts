/**
 * The floor for `prepare`: csv-parse alone over a file, with the options prepare uses, records counted and dropped.
 * Prints one JSON line: rows, seconds, peak RSS. Run by bench/ingest.
 */
import { parse } from 'csv-parse';
import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const file = process.argv[2]!;
const started = performance.now();
let rows = 0;
await pipeline(
  createReadStream(file, { highWaterMark: 64 * 1024 }),
  parse({ bom: true, skip_empty_lines: true }),
  new Writable({
    objectMode: true,
    write(_record, _enc, callback) {
      rows++;
      callback();
    },
  }),
);
console.log(JSON.stringify({ rows: rows - 1, seconds: (performance.now() - started) / 1000, peakRssMB: process.resourceUsage().maxRSS / 1024 }));
