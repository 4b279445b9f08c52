/**
 * The power-cut campaign in small (test/campaigns/power-cut.ts; full size and figures in RELIABILITY.md): at every
 * commit boundary of a prepare, the states a power cut may leave open and resume to exactly a clean run's result.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { powerCut } from './campaigns/power-cut.js';
import { tempDir } from './helpers.js';

test('power cut at every commit boundary: the store opens, resumes, and ends byte for byte as a clean run', async (t) => {
  const f = await powerCut({ rows: 600, perFile: 500, dir: path.join(tempDir(t), 'p') });
  assert.deepEqual(f.mismatches, []);
  assert.ok(f.requestFiles >= 4, `${f.requestFiles} request files`);
  assert.equal(f.boundaries, f.requestFiles + 1, 'every commit, and the state before the first');
  assert.equal(f.identical, f.cuts);
  assert.ok(f.textsLostCuts >= 1, 'texts lost under surviving pointers: the recovery scan ran');
});
