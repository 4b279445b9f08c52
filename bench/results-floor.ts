/**
 * The floor for the results side: split2 + JSON.parse per line over a result file, nothing else. Prints one JSON
 * line: lines, seconds, peak RSS. Run by bench/results.
 */
import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import split2 from 'split2';

const started = performance.now();
let lines = 0;
await pipeline(
  createReadStream(process.argv[2]!, { highWaterMark: 256 * 1024 }),
  split2('\n', (l: string) => (l ? JSON.parse(l) : undefined)),
  new Writable({
    objectMode: true,
    write(_v, _e, cb) {
      lines++;
      cb();
    },
  }),
);
console.log(JSON.stringify({ lines, seconds: (performance.now() - started) / 1000, peakRssMB: process.resourceUsage().maxRSS / 1024 }));
