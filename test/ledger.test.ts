/**
 * The ledger (src/ledger.ts) after runs into several sink targets, a replay, and a re-exported source: exact figures,
 * worked out from the fixture with csv-parse alone. Batch, real-time, crash and retry runs check it in their own tests.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse as parseCsvSync } from 'csv-parse/sync';
import { fixture, fixtureStrings, runCli, tempDir } from './helpers.js';

const SIM_PACE = { EMBATCH_BATCH_POLL_INTERVAL: '0.2', EMBATCH_SIMULATOR__VALIDATING_SECONDS: '0.1', EMBATCH_SIMULATOR__FINALIZING_SECONDS: '0.1' };
const objectsOf = (strings: Map<string, Map<string, number>>, keep: (text: string) => boolean = () => true) => [...strings].filter(([text]) => keep(text)).reduce((n, [, fields]) => n + fields.size, 0);
const ledger = (l: Partial<Record<string, number>>) => ({ total: 0, skipped: 0, pending: 0, submitted: 0, embedded: 0, indexed: 0, failed_retryable: 0, failed_permanent: 0, ...l });

test('the ledger adds up per sink target: after a JSONL run, in another target, after a replay, and after a re-exported source', async (t) => {
  const work = tempDir(t);
  const csv = path.join(tempDir(t), 'export.csv');
  copyFileSync(fixture('catalog.csv'), csv);
  const cli = (args: string[]) => runCli([...args, '--work-dir', work], { env: SIM_PACE });
  const json = async (args: string[], code = 0) => {
    const r = await cli([...args, '--json']);
    assert.equal(r.code, code, r.stderr);
    return JSON.parse(r.stdout);
  };
  const { strings } = fixtureStrings(csv);
  const total = strings.size;
  const objects = objectsOf(strings);
  const a = path.join(work, 'a.jsonl');
  const b = path.join(work, 'b.jsonl');

  const run = await json(['run', csv, '--simulate', '--wait', '--sink', `jsonl:${a}`]);
  assert.deepEqual(run.status.strings, ledger({ total, indexed: total }));
  assert.deepEqual(run.status.objects, { target: `jsonl:${a}`, total: objects, indexed: objects, refused: 0 });
  assert.equal(readFileSync(a, 'utf8').trim().split('\n').length, objects);

  // Another target has none of it: every string is embedded, waiting for `embatch index`.
  const weaviate = await json(['status', '--offline']);
  assert.deepEqual(weaviate.strings, ledger({ total, embedded: total }));
  assert.deepEqual([weaviate.objects.total, weaviate.objects.indexed], [objects, 0]);
  assert.match(weaviate.next, new RegExp(`${total} string\\(s\\) are not in weaviate:`));

  // A replay writes every object to its target; the files are counted as taken by `index`, which sends nothing again.
  await json(['replay', path.join(work, 'results', '*.jsonl'), '--sink', `jsonl:${b}`]);
  const replayed = await json(['status', '--offline', '--sink', `jsonl:${b}`]);
  assert.deepEqual([replayed.strings.embedded, replayed.objects.indexed], [total, objects]);
  const indexed = await json(['index', '--sink', `jsonl:${b}`]);
  assert.deepEqual([indexed.alreadyIndexed, indexed.acked], [objects, 0]);
  assert.deepEqual(indexed.strings, ledger({ total, indexed: total }));

  // The source exported again, with one name changed: the strings holding the old name are in no source any more
  // (skipped once a target takes their file), the new ones wait in a new request file.
  writeFileSync(csv, readFileSync(csv, 'utf8').replaceAll('Winterreise', 'Winterreise (revised)'));
  const now = fixtureStrings(csv).strings;
  const vanished = [...strings.keys()].filter((text) => !now.has(text)).length;
  const added = [...now.keys()].filter((text) => !strings.has(text)).length;
  assert.ok(vanished > 0 && added > 0, `${vanished} vanished, ${added} added`);
  await json(['prepare', csv]);
  const c = path.join(work, 'c.jsonl');
  const fresh = await json(['index', '--sink', `jsonl:${c}`]);
  assert.deepEqual(fresh.strings, ledger({ total: total + added, skipped: vanished, pending: added, indexed: total - vanished }));
  assert.deepEqual(fresh.objects, { target: `jsonl:${c}`, total: objectsOf(now, (text) => strings.has(text)), indexed: objectsOf(now, (text) => strings.has(text)), refused: 0 });
  assert.equal(readFileSync(c, 'utf8').trim().split('\n').length, fresh.objects.indexed, 'no object for a string no source has');
});

test('counts changed by a later prepare: index sends again exactly the objects whose frequency changed, once', async (t) => {
  const work = tempDir(t);
  const csv = path.join(tempDir(t), 'export.csv');
  copyFileSync(fixture('catalog.csv'), csv);
  const json = async (args: string[]) => {
    const r = await runCli([...args, '--work-dir', work, '--json'], { env: SIM_PACE });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  const before = fixtureStrings(csv).strings;
  const a = path.join(work, 'a.jsonl');
  await json(['run', csv, '--simulate', '--wait', '--sink', `jsonl:${a}`]);
  const sent = readFileSync(a, 'utf8').trim().split('\n').length;
  assert.equal(sent, objectsOf(before));

  // The source exported again with five of its rows twice: their strings' counts change, the others' do not.
  const rows = parseCsvSync(readFileSync(csv), { relax_column_count: true }) as string[][];
  const quoted = (row: string[]) => row.map((v) => `"${v.replaceAll('"', '""')}"`).join(',');
  writeFileSync(csv, readFileSync(csv, 'utf8').replace(/\r?\n?$/, '\n') + rows.slice(1, 6).map(quoted).join('\n') + '\n');
  const after = fixtureStrings(csv).strings;
  let changed = 0;
  for (const [text, fields] of after) for (const [field, n] of fields) if (before.has(text) && before.get(text)!.get(field) !== n) changed++;
  assert.ok(changed > 0 && changed < sent, `${changed} of ${sent} objects change`);
  await json(['prepare', csv]);

  const again = await json(['index', '--sink', `jsonl:${a}`]);
  assert.deepEqual([again.objectsSent, again.acked, again.alreadyIndexed], [changed, changed, sent - changed]);
  const resent = readFileSync(a, 'utf8').trim().split('\n').slice(sent).map((l) => JSON.parse(l));
  assert.equal(resent.length, changed);
  for (const o of resent) assert.equal(o.properties.frequency, after.get(o.properties.original_string)!.get(o.properties.field_type), `${o.properties.original_string} (${o.properties.field_type})`);
  // Taken at the new counts: nothing more to send.
  assert.equal((await json(['index', '--sink', `jsonl:${a}`])).files, 0);
});
