/**
 * The reliability campaigns (test/campaigns/, figures in RELIABILITY.md) in small versions: the same code, fewer rows,
 * kills and fuzz cases.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import { badInput } from './campaigns/bad-input.js';
import { crashResume } from './campaigns/crash-resume.js';
import { faultRun } from './campaigns/faults.js';
import { security, WEAVIATE_KEY } from './campaigns/security.js';
import { fixtureStrings, tempDir } from './helpers.js';
import { weaviateForTests } from './weaviate-support.js';

// One server of this file's own, started with API-key auth: the security campaign needs it, and the faults campaign
// stops and restarts it.
const server = await weaviateForTests({ apiKey: WEAVIATE_KEY });
after(() => server.target?.release());

test('crash-resume: killed at random moments in every stage, the end state equals an uninterrupted run', { skip: server.skip }, async (t) => {
  // Kills aimed at events (see CrashResumeOptions.aimed): where they land does not depend on the machine's speed.
  const f = await crashResume({ rows: 1000, kills: 10, seed: 5, dir: path.join(tempDir(t), 'c'), weaviate: server.target!, aimed: true });
  assert.equal(f.killsByStage.prepare, 2, `a fifth of the kills in prepare: ${JSON.stringify(f.killsByStage)}`);
  // The first run try has batches to submit, so it makes API requests and is killed: at least one kill after prepare.
  const later = f.killPoints - 2;
  assert.ok(later >= 1 && Object.keys(f.killsByStage).some((s) => s === 'submit' || s === 'poll' || s === 'download'), `kills in ${JSON.stringify(f.killsByStage)}`);
  assert.ok(f.objects > 2000, `${f.objects} objects`);
  assert.deepEqual(
    { lost: f.objectsLost, duplicated: f.objectsDuplicated, differing: f.objectsDiffering, duplicateBatches: f.duplicateBatches, extraRequests: f.extraRequests },
    { lost: 0, duplicated: 0, differing: 0, duplicateBatches: 0, extraRequests: 0 },
  );
});

test('faults at 20% and Weaviate restarted while indexing: the run completes and no string is lost', { skip: server.skip }, async (t) => {
  const f = await faultRun({ rate: 0.2, rows: 600, seed: 9, dir: path.join(tempDir(t), 'f'), weaviate: server.target!, restartWeaviate: true });
  assert.ok(f.completed, `completed after ${f.attempts} attempt(s)`);
  assert.ok(Object.values(f.faultsInjected).reduce((a, b) => a + b, 0) > 0, 'faults were injected');
  assert.equal(f.weaviateRestarts, 1);
  assert.equal(f.lost, 0);
  assert.ok(f.embedded > 0.8 * f.strings, `${f.embedded} of ${f.strings} embedded`);
  assert.equal(f.weaviateObjects, f.indexedMarks, 'Weaviate holds exactly the objects marked indexed');
});

test('bad input: every broken CSV and result file, and 30 mutated ones, end in a clear error or a recorded reject', async (t) => {
  const f = await badInput({ dir: path.join(tempDir(t), 'b'), fuzz: 30, seed: 11 });
  assert.deepEqual(f.defects, []);
  const verdict = (name: string) => f.corpus.find((c) => c.case === name)?.verdict;
  assert.equal(verdict('csv unterminated-quote (stop)'), 'clear_error');
  assert.equal(verdict('csv ragged-rows (skip)'), 'reject_recorded');
  assert.equal(verdict('csv empty-file (stop)'), 'clear_error');
  assert.equal(verdict('csv 50mb-field (stop)'), 'reject_recorded');
  assert.equal(verdict('csv bom-crlf-mixed (stop)'), 'ok', 'mixed line ends read as rows');
  assert.equal(verdict('results nan-base64'), 'reject_recorded');
  assert.equal(verdict('results duplicated-lines'), 'ok');
  assert.equal(f.byVerdict.crash + f.byVerdict.hang + f.byVerdict.silent_loss + f.byVerdict.unclear_error, 0);
});

// The key and file checks need no Weaviate: without a server they run against the JSONL sink, and only the
// Weaviate API-key checks wait for one.
test('security: no key in any file or output, owner-only files, unsafe file ids refused, Weaviate API-key auth', async (t) => {
  const f = await security({ dir: path.join(tempDir(t), 's'), weaviate: server.target });
  assert.ok(f.filesSearched >= 8 && f.commands >= 8, `${f.filesSearched} files, ${f.commands} commands`);
  assert.deepEqual(f.keyFoundIn, []);
  assert.deepEqual(f.notOwnerOnly, []);
  assert.ok(f.badFileIdRefused, 'a file id that is a path is refused');
  assert.ok(f.configWarning, 'a key in a world-readable config file draws a warning');
  assert.ok(f.wrongOpenAiKeyClearError, 'wrong OpenAI key: a clear error without the key');
  assert.equal(f.stackTraces, 0);
  if (server.target) {
    // The fixture's objects, one per distinct string and field, all indexed through API-key auth.
    const { strings } = fixtureStrings('catalog.csv');
    assert.equal(f.weaviateAuthIndexed, [...strings.values()].reduce((n, fields) => n + fields.size, 0), 'indexed through API-key auth');
    assert.equal(f.weaviateNoKeyClearError, true, 'no key: a clear error');
  } else assert.deepEqual([f.weaviateAuthIndexed, f.weaviateNoKeyClearError], [null, null]);
});
