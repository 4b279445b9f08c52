import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { countTokens as referenceCount } from 'gpt-tokenizer/encoding/cl100k_base';
import { Level } from 'level';
import { InputError } from '../src/errors.js';
import { KeyFilter, KeyTable } from '../src/key-filter.js';
import { decodeRecord, encodeNewRecord, encodeRecord, readKeyWords, StateStore, stringKey, StringWrites, type TextChunk } from '../src/store.js';
import { newCounters, type CsvRecord, type NewString } from '../src/types.js';
import { batchItems } from '../transforms/batch-items.js';
import { countTokens } from '../transforms/count-tokens.js';
import { decodeText } from '../transforms/decode-text.js';
import { dedupStrings } from '../transforms/dedup-strings.js';
import { extractStrings, type ExtractedBatch } from '../transforms/extract-strings.js';
import { aggregateBatch } from '../transforms/aggregate-strings.js';
import { hashValue } from '../transforms/build-objects.js';
import { formatRequests, parseCustomId, RequestLineFormat, type RequestBatch } from '../transforms/format-requests.js';
import { guardTokens, truncateToTokens } from '../transforms/guard-tokens.js';
import { parseCsv, type RejectedRow } from '../transforms/parse-csv.js';
import { writeRequestFiles } from '../transforms/write-request-files.js';
import { tempDir } from './helpers.js';

async function run<T>(input: unknown[], ...stages: Duplex[]): Promise<T[]> {
  const out: T[] = [];
  const sink = new Writable({
    objectMode: true,
    write(item: T, _e, cb) {
      out.push(item);
      cb();
    },
  });
  await pipeline([Readable.from(input, { objectMode: true }), ...stages, sink] as unknown as [Readable, Writable]);
  return out;
}

/** The same bytes cut into chunks of `size`, as a file read would deliver them with a small buffer. */
const chunks = (bytes: Buffer, size: number) => Array.from({ length: Math.ceil(bytes.length / size) }, (_, i) => bytes.subarray(i * size, (i + 1) * size));

test('decodeText: UTF-8 split across chunks at every position passes on whole characters, BOM dropped', async () => {
  const text = 'name\nDvořák, Antonín — 𝄞 Bärtók\n';
  const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]);
  for (const size of [1, 2, 3, 5, 64]) {
    const out = await run<Buffer>(chunks(bytes, size), decodeText('x.csv', 'utf-8'));
    assert.ok(out.every((chunk) => isUtf8(chunk) && chunk.length > 0), `chunk size ${size}: each chunk whole characters`);
    assert.equal(Buffer.concat(out).toString(), text, `chunk size ${size}`);
  }
  assert.deepEqual(await run<Buffer>(chunks(Buffer.from([0xef, 0xbb, 0xbf]), 1), decodeText('x.csv', 'utf-8')), [], 'a BOM alone');
  assert.deepEqual(await run<Buffer>([Buffer.alloc(0)], decodeText('x.csv', 'utf-8')), [], 'an empty chunk is no cut character');
  assert.equal(Buffer.concat(await run<Buffer>([Buffer.alloc(0), Buffer.from('a,b\n'), Buffer.alloc(0)], decodeText('x.csv', 'utf-8'))).toString(), 'a,b\n');
  await assert.rejects(run([Buffer.from([0xef, 0xbb]), Buffer.from('x')], decodeText('x.csv', 'utf-8')), /not valid utf-8 near byte offset 2/, 'a BOM\'s start, then not its end');
});

test('decodeText: invalid UTF-8 is an error naming file, line and byte offset', async () => {
  const bytes = Buffer.concat([Buffer.from('a,b\nok,1\nbad,'), Buffer.from([0xc3, 0x28]), Buffer.from('\n')]);
  for (const size of [1, 4, 15, 1000]) {
    await assert.rejects(run(chunks(bytes, size), decodeText('in.csv', 'utf-8')), (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.equal(err.code, 'INPUT_ENCODING');
      assert.equal(err.line, 3);
      assert.match(err.message, /^in\.csv:3: bytes are not valid utf-8 near byte offset 14/, `chunk size ${size}`);
      return true;
    });
  }
});

test('decodeText: input ending inside a character is an error, however it is cut', async () => {
  const bytes = Buffer.concat([Buffer.from('a\nb'), Buffer.from('𝄞').subarray(0, 3)]);
  for (const size of [1, 2, 4, 1000]) {
    await assert.rejects(run(chunks(bytes, size), decodeText('in.csv', 'utf-8')), (err: unknown) => {
      assert.ok(err instanceof InputError && err.code === 'INPUT_ENCODING' && err.line === 2, `chunk size ${size}`);
      assert.match(err.message, /^in\.csv:2: input ends inside a utf-8 character at byte offset 3$/);
      return true;
    });
  }
  await assert.rejects(run([Buffer.from([0xef, 0xbb])], decodeText('in.csv', 'utf-8')), /input ends inside a utf-8 character at byte offset 0/, 'a BOM cut short');
});

test('decodeText: latin1 input is read as configured', async () => {
  const out = await run<string>([Buffer.from([0x44, 0x76, 0xf8, 0x72])], decodeText('x.csv', 'latin1'));
  assert.equal(out.join(''), 'Dvør');
});

test('parseCsv: multi-line quoted fields, doubled quotes, CRLF, and the line each record starts on', async () => {
  const csv = 'a,b\r\n1,"two\r\nlines"\r\n2,"say ""hi"""\r\n\r\n3,x\r\n';
  for (const size of [1, 7, 1000]) {
    const records = await run<CsvRecord>(chunks(Buffer.from(csv), size).map(String), parseCsv({ file: 'f.csv', delimiter: ',', quote: '"', escape: '"', onMalformedRow: 'stop' }));
    assert.deepEqual(records.map((r) => [...r]), [['a', 'b'], ['1', 'two\r\nlines'], ['2', 'say "hi"'], ['3', 'x']]);
    assert.deepEqual(records.map((r) => r.line), [1, 2, 4, 6], `chunk size ${size}`);
  }
});

test('parseCsv: a malformed row stops with its line, or is skipped and reported', async () => {
  const csv = readFileSync(new URL('../../fixtures/malformed.csv', import.meta.url), 'utf8');
  const opts = { file: 'malformed.csv', delimiter: ',', quote: '"', escape: '"' };
  await assert.rejects(run([csv], parseCsv({ ...opts, onMalformedRow: 'stop' })), (err: unknown) => {
    assert.ok(err instanceof InputError);
    assert.equal(err.code, 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH');
    assert.equal(err.line, 4);
    assert.match(err.message, /^malformed\.csv:4: malformed CSV/);
    return true;
  });
  const rejects: RejectedRow[] = [];
  const records = await run<CsvRecord>([csv], parseCsv({ ...opts, onMalformedRow: 'skip', onReject: (r) => rejects.push(r) }));
  assert.deepEqual(records.map((r) => r[3]), ['person', 'Good, One', 'Good, Four']);
  assert.deepEqual(records.map((r) => r.line), [1, 2, 6]);
  assert.deepEqual(rejects.map((r) => r.line), [4, 5]);
  assert.ok(rejects.every((r) => r.file === 'malformed.csv' && r.reason.length > 10));
});

test('extractStrings: configured fields only, null tokens skipped, text kept byte for byte', async () => {
  const header = Object.assign(['id', 'person', 'title', 'notes'], { line: 1 });
  const rows = [
    Object.assign(['1', ' Dvor\u030Cák ', 'NaN', 'x'], { line: 2 }),
    Object.assign(['2', '', 'Rusalka', 'y'], { line: 3 }),
  ];
  const counters = newCounters();
  const base = { file: 'f.csv', embedFields: ['person', 'title'], columns: null, header: true, nullValues: ['', 'NaN'], trim: false, counters };
  const [out] = await run<ExtractedBatch>([[header, ...rows]], extractStrings({ ...base, normalize: 'none' }));
  assert.deepEqual(out!.texts, [' Dvor\u030Cák ', 'Rusalka']);
  assert.deepEqual(out!.fields, [0, 1]);
  assert.deepEqual(out!.lines, [2, 3]);
  assert.equal(counters.rows, 2);
  assert.equal(counters.skipped.null_value, 2);
  const trimmed = newCounters();
  const blank = Object.assign(['3', '   ', ' NaN ', 'z'], { line: 4 });
  const [nfc] = await run<ExtractedBatch>([[header, ...rows, blank]], extractStrings({ ...base, counters: trimmed, normalize: 'NFC', trim: true }));
  assert.deepEqual(nfc!.texts, ['Dvořák', 'Rusalka']);
  assert.deepEqual([trimmed.skipped.empty, trimmed.skipped.null_value], [1, 3], 'trimmed to nothing: empty; trimmed to a null token: null');
});

test('extractStrings: a configured column missing from the header is a usage error naming it', async () => {
  const header = ['id', 'person'];
  await assert.rejects(
    run([[header]], extractStrings({ file: 'f.csv', embedFields: ['title'], columns: null, header: true, nullValues: [], normalize: 'none', trim: false, counters: newCounters() })),
    (err: Error & { exitCode?: number }) => err.exitCode === 2 && /f\.csv:1: embed_fields names column "title"/.test(err.message),
  );
});

async function dedupOnce(workDir: string, batches: ExtractedBatch[], fields = ['person', 'title']) {
  const store = await StateStore.open(workDir);
  const counters = newCounters();
  const run_ = await store.beginRun('src');
  const fresh = (await run<NewString[]>(batches.map(aggregateBatch), dedupStrings({ store, run: run_.id, source: 'src', embedFields: fields, counters }))).flat();
  // Commit as the writer would, so the next run sees these strings as known.
  await store.commit(store.committedId + fresh.length, null, []);
  await store.finishRun(run_);
  return { fresh, counters, store };
}

test('more than 255 embed fields: a string is counted under its own field (field indexes once wrapped at 256)', async (t) => {
  const fields = Array.from({ length: 300 }, (_, i) => `f${i}`);
  // 'late' first in field 299, then in 298; 'early' in field 1 and field 257 (257 wrapped to 1 as a byte).
  const batch: ExtractedBatch = { texts: ['late', 'late', 'early', 'early'], fields: [299, 298, 1, 257], lines: [2, 2, 3, 3] };
  const distinct = aggregateBatch(batch);
  assert.deepEqual([...distinct.firstField], [299, 1]);
  assert.deepEqual(distinct.more, [0, 298, 1, 1, 257, 1]);
  const { fresh, store } = await dedupOnce(tempDir(t), [batch], fields);
  assert.deepEqual(fresh.map((s) => [s.text, s.field]), [['late', 'f299'], ['early', 'f1']]);
  const [late, early] = await store.readStrings([0, 1]);
  assert.deepEqual(store.frequencies(late!.record), { f299: 1, f298: 1 });
  assert.deepEqual(store.frequencies(early!.record), { f1: 1, f257: 1 });
  await store.close();
});

test('dedupStrings: CRC32 collisions stay apart, one string in two fields is one request, reruns add nothing', async (t) => {
  const dir = tempDir(t);
  const batch: ExtractedBatch = { texts: ['plumless', 'buckeroo', 'Ibsen', 'Ibsen', 'plumless'], fields: [0, 0, 0, 1, 0], lines: [2, 3, 4, 4, 5] };
  const first = await dedupOnce(dir, [batch]);
  assert.deepEqual(first.fresh.map((s) => [s.text, s.field, s.id]), [['plumless', 'person', 0], ['buckeroo', 'person', 1], ['Ibsen', 'person', 2]]);
  assert.equal(first.fresh[0]!.crc, first.fresh[1]!.crc, 'the pair shares a CRC32');
  assert.deepEqual([first.counters.distinct, first.counters.newStrings, first.counters.known], [3, 3, 0]);
  const [plumless, buckeroo, ibsen] = await first.store.readStrings([0, 1, 2]);
  assert.deepEqual([plumless!.text, buckeroo!.text], ['plumless', 'buckeroo']);
  assert.deepEqual(first.store.frequencies(ibsen!.record), { person: 1, title: 1 });
  assert.deepEqual(first.store.frequencies(plumless!.record), { person: 2 });
  assert.deepEqual(first.store.frequencies(buckeroo!.record), { person: 1 });
  assert.deepEqual(await first.store.readStrings([3]), [undefined], 'an id never handed out');
  await first.store.close();

  const second = await dedupOnce(dir, [batch, { texts: ['Ibsen', 'new one'], fields: [1, 1], lines: [9, 9] }]);
  assert.deepEqual(second.fresh.map((s) => [s.text, s.id]), [['new one', 3]]);
  assert.deepEqual([second.counters.distinct, second.counters.known, second.counters.newStrings], [4, 3, 1]);
  // The same source prepared again: its counts are replaced, not added to.
  const [again] = await second.store.readStrings([2]);
  assert.deepEqual(second.store.frequencies(again!.record), { person: 1, title: 2 });
  await second.store.close();
});

test('dedupStrings: counts of strings that recur across batches are right whether they stay in the cache, leave it, or find their cache key taken', async (t) => {
  // 40 batches over 12 recurring names and one new title each; small caches make names leave and come back.
  const names = Array.from({ length: 12 }, (_, i) => `name ${i}`);
  const batches: ExtractedBatch[] = Array.from({ length: 40 }, (_, b) => {
    const picked = [names[b % 12]!, names[(b * 5) % 12]!, names[(b * 7 + 3) % 12]!];
    return { texts: [...picked, `title ${b}`, picked[0]!], fields: [0, 0, 1, 1, 0], lines: [b, b, b, b, b] };
  });
  // Then 300 batches of names drawn at random (a fixed seed) from 40, in both fields: strings found again take cache
  // slots from strings that come later in the same batch, in every order.
  let seed = 12345;
  const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  const pool = Array.from({ length: 40 }, (_, i) => `pooled ${i}`);
  for (let b = 0; b < 300; b++) {
    const texts = Array.from({ length: 1 + random(9) }, () => pool[random(pool.length)]!);
    batches.push({ texts, fields: texts.map(() => random(2)), lines: texts.map(() => 1000 + b) });
  }
  const expected = new Map<string, Record<string, number>>();
  for (const batch of batches)
    batch.texts.forEach((text, i) => {
      const counts = expected.get(text) ?? {};
      const field = ['person', 'title'][batch.fields[i]!]!;
      counts[field] = (counts[field] ?? 0) + 1;
      expected.set(text, counts);
    });
  // Caches of 1, 2 and 4 slots make strings take each other's slots all the time; 1,024 keeps nearly all of them. With
  // 'title' as the 30th of 30 embed fields, a title's record is too long for a cache slot's bytes and stays an object.
  const fillers = Array.from({ length: 28 }, (_, i) => `unused ${i}`);
  for (const [embedFields, asBatches] of [
    [['person', 'title'], batches],
    [['person', ...fillers, 'title'], batches.map((b) => ({ ...b, fields: b.fields.map((f) => (f === 1 ? 29 : 0)) }))],
  ] as const)
  for (const [cacheSize, slowWrites] of [[1, false], [2, false], [4, false], [16, false], [1024, false], [1, true], [16, true]] as const) {
    const dir = tempDir(t);
    let store = await StateStore.open(dir);
    const how = `with a cache of ${cacheSize}, ${embedFields.length} fields${slowWrites ? ', writes slowed' : ''}`;
    // Slowed writes start only after a timer: a batch's records are read ahead while the writes of the two batches
    // before it have not reached LevelDB, so only the overlays can tell that their strings exist.
    const slow = (s: StateStore) => {
      const write = s.writeStrings.bind(s);
      if (slowWrites) s.writeStrings = async (...args) => new Promise<void>((resolve) => setTimeout(resolve, 2)).then(() => write(...args));
      return s;
    };
    const counters = newCounters();
    const run_ = await store.beginRun('src');
    const fresh = (await run<NewString[]>(asBatches.map(aggregateBatch), dedupStrings({ store: slow(store), run: run_.id, source: 'src', embedFields: [...embedFields], counters, cacheSize }))).flat();
    await store.commit(store.committedId + fresh.length, null, []);
    await store.finishRun(run_);
    assert.equal(fresh.length, expected.size, how);
    assert.deepEqual([counters.distinct, counters.newStrings, counters.known], [expected.size, expected.size, 0], how);
    const ids = fresh.map((s) => s.id);
    for (const s of await store.readStrings(ids)) assert.deepEqual(store.frequencies(s!.record), expected.get(s!.text), `${s!.text} ${how}`);
    if (slowWrites) {
      // Again over a store that holds every string: each one is read (no filter), and its counts replace the first run's.
      await store.close();
      store = await StateStore.open(dir);
      const again = newCounters();
      const run2 = await store.beginRun('src');
      const fresh2 = (await run<NewString[]>(asBatches.map(aggregateBatch), dedupStrings({ store: slow(store), run: run2.id, source: 'src', embedFields: [...embedFields], counters: again, cacheSize }))).flat();
      await store.finishRun(run2);
      assert.deepEqual([fresh2.length, again.distinct, again.known], [0, expected.size, expected.size], how);
      for (const s of await store.readStrings(ids)) assert.deepEqual(store.frequencies(s!.record), expected.get(s!.text), `second run: ${s!.text} ${how}`);
    }
    await store.close();
  }
});

/** Texts as writeStrings takes them. */
const json = (text: string) => JSON.stringify(text);

test('writeStrings: records and text chunks land as the public API reads them; a store knows whether it held strings when opened', async (t) => {
  const dir = tempDir(t);
  let store = await StateStore.open(dir);
  assert.equal(store.heldStrings, false, 'a new store');
  const texts = ['Ibsen, Henrik', 'Dvor\u030Cák', ''];
  const records = new StringWrites();
  texts.forEach((text, id) => records.put(stringKey(text), encodeRecord({ id, f: store.fieldId('person'), lr: 1, src: [{ s: 0, r: 1, c: [id + 1] }] })));
  // One native batch serves every write, so writes go one at a time.
  const first = store.writeStrings(records, 0, texts.map(json));
  await assert.rejects(store.writeStrings(records, 0, texts.map(json)), /the previous write has not landed/);
  await first;
  await store.close();
  // Read back through abstract-level's public API, as bytes.
  const db = new Level<Buffer, Buffer>(path.join(dir, 'state'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  for (let i = 0; i < texts.length; i++) assert.deepEqual(await db.get(records.keys[i]!), records.values[i]);
  // The texts are one line of the text log; the chunk points at it.
  const line = JSON.stringify(texts) + '\n';
  assert.equal(readFileSync(path.join(dir, 'texts.jsonl'), 'utf8'), line);
  assert.deepEqual(await db.sublevel<string, TextChunk>('c', { valueEncoding: 'json' }).get('000000000000'), { o: 0, n: Buffer.byteLength(line), k: 3 });
  assert.deepEqual(await db.sublevel<string, string[]>('m', { valueEncoding: 'json' }).get('fields'), ['person']);
  await db.close();
  // Never committed: the strings of a dead run are dropped on opening, the text log is cut back, and the store held none.
  store = await StateStore.open(dir);
  assert.equal(store.heldStrings, false);
  assert.equal(statSync(path.join(dir, 'texts.jsonl')).size, 0, 'the dead run\'s texts are cut off the log');
  assert.deepEqual(await store.lookupStrings(records.keys), [undefined, undefined, undefined]);
  await store.writeStrings(records, 0, texts.map(json));
  await store.commit(3, null, []);
  await store.close();
  store = await StateStore.open(dir);
  assert.equal(store.heldStrings, true, 'committed strings');
  const read = await store.readStrings([0, 1, 2]);
  assert.deepEqual(read.map((s) => s?.text), texts);
  assert.deepEqual(read.map((s) => s?.hash), texts.map(hashValue), 'the hash read off the key is the hash_value');
  await store.close();
});

test('text log: a chunk committed in part keeps its committed texts; the next chunk follows it; a log cut short is refused', async (t) => {
  const dir = tempDir(t);
  const log = path.join(dir, 'texts.jsonl');
  let store = await StateStore.open(dir);
  const write = async (texts: string[], firstId: number) => {
    const records = new StringWrites();
    texts.forEach((text, i) => records.put(stringKey(text), encodeRecord({ id: firstId + i, f: store.fieldId('title'), lr: 1, src: [{ s: 0, r: 1, c: [0, 1] }] })));
    await store.writeStrings(records, firstId, texts.map(json));
  };
  await write(['Peer Gynt', 'Brand', 'Rosmersholm'], 0);
  await write(['Hedda Gabler', 'Gengangere'], 3);
  // A file ended after the first two strings; the process died after writing the rest.
  await store.commit(2, null, []);
  await store.close();
  const firstLine = Buffer.byteLength(JSON.stringify(['Peer Gynt', 'Brand', 'Rosmersholm']) + '\n');
  store = await StateStore.open(dir);
  assert.equal(statSync(log).size, firstLine, 'the second chunk (never committed) is cut off; the first stays whole');
  assert.deepEqual((await store.readStrings([0, 1, 2, 3])).map((s) => s?.text), ['Peer Gynt', 'Brand', undefined, undefined]);
  assert.deepEqual(await store.lookupStrings([stringKey('Rosmersholm'), stringKey('Hedda Gabler')]), [undefined, undefined], 'uncommitted records dropped');
  // The next run hands out id 2 again; its chunk goes after the first line.
  await write(['Vildanden'], 2);
  await store.commit(3, null, []);
  await store.close();
  store = await StateStore.open(dir);
  assert.deepEqual((await store.readStrings([0, 1, 2])).map((s) => s?.text), ['Peer Gynt', 'Brand', 'Vildanden']);
  // A chunk too large for the kept line buffer (over 4 MB at 3 bytes a UTF-16 unit) gets one of its own; the lines
  // before and after it are encoded into the kept one.
  const huge = 'ø'.repeat(1_500_000);
  await write(['Et dukkehjem', huge], 3);
  await write(['Fruen fra havet'], 5);
  await store.commit(6, null, []);
  await store.close();
  store = await StateStore.open(dir);
  assert.deepEqual((await store.readStrings([2, 3, 4, 5])).map((s) => s?.text), ['Vildanden', 'Et dukkehjem', huge, 'Fruen fra havet']);
  await store.close();
  // Texts the store points at are missing: a clear error, never a silent loss.
  truncateSync(log, firstLine - 5);
  await assert.rejects(StateStore.open(dir), (err: Error & { code?: string }) => err.code === 'STATE_TEXTS' && /texts\.jsonl is shorter .* than the store says .*use a new work directory/.test(err.message));
});

test('encodeNewRecord gives the bytes encodeRecord gives for the same new string; decodeRecord reads them back', () => {
  for (const [id, field, run, source, n] of [[0, 0, 1, 0, 1], [7, 3, 2, 1, 5], [2 ** 32 - 1, 5, 300, 9, 2 ** 31 + 3], [123456, 1, 65536, 256, 70000]] as const) {
    const record = { id, f: field, lr: run, src: [{ s: source, r: run, c: [...Array<number>(field).fill(0), n] }] };
    assert.deepEqual(encodeNewRecord(id, field, run, source, n), encodeRecord(record));
    assert.deepEqual(decodeRecord(encodeNewRecord(id, field, run, source, n)), record);
  }
  // Varints: a typical record is a few bytes, one per small number.
  assert.equal(encodeNewRecord(5, 0, 1, 0, 1).length, 10);
  assert.equal(encodeNewRecord(300, 2, 1, 0, 200).length, 14);
  assert.throws(() => decodeRecord(encodeNewRecord(300, 2, 1, 0, 200).subarray(0, 13)), /cut short/);
});

test('KeyFilter: every added key is maybe present; few absent keys are', () => {
  const filter = new KeyFilter(1024 * 1024);
  const wordsOf = (texts: string[]) => {
    const words = new Uint32Array(texts.length * 4);
    texts.forEach((text, i) => readKeyWords(stringKey(text), 0, words, i * 4));
    return words;
  };
  const added = wordsOf(Array.from({ length: 100_000 }, (_, i) => `added ${i}`));
  for (let i = 0; i < 100_000; i++) filter.add(added, i * 4);
  let missed = 0;
  for (let i = 0; i < 100_000; i++) if (!filter.mayHave(added, i * 4)) missed++;
  assert.equal(missed, 0, 'no added key reported absent');
  // 1 MiB for 100k keys is ~84 bits a key: false positives are a few in 100k at most.
  const absent = wordsOf(Array.from({ length: 100_000 }, (_, i) => `absent ${i}`));
  let falsePositives = 0;
  for (let i = 0; i < 100_000; i++) if (filter.mayHave(absent, i * 4)) falsePositives++;
  assert.ok(falsePositives < 100, `${falsePositives} false positives in 100,000`);
});

test('KeyTable: each key finds its own number, also among keys that share their first word; absent keys find none', () => {
  const n = 3000;
  const words = new Uint32Array(n * 4);
  for (let i = 0; i < n; i++) words.set([i % 7, i, i * 31, 0xffffffff - i], i * 4); // 7 first words: long probe runs
  const table = new KeyTable(n);
  for (let i = 0; i < n; i++) table.set(words, i * 4, i);
  for (let i = 0; i < n; i++) assert.equal(table.get(words, i * 4), i);
  table.set(words, 5 * 4, 42);
  assert.equal(table.get(words, 5 * 4), 42, 'a key set again has the new number');
  const absent = Uint32Array.of(1, 1, 31, 0); // first three words of key 1, not its last
  assert.equal(table.get(absent, 0), -1);
  assert.throws(() => table.set(absent, 0, 0), /more than 3000 keys/, 'a full table says so rather than looping');
});

test('a work directory in another state layout is refused with a message saying what to do', async (t) => {
  const dir = tempDir(t);
  await (await StateStore.open(dir)).close();
  // As an older embatch left it: no layout version.
  const db = new Level<string, unknown>(path.join(dir, 'state'), { valueEncoding: 'json' });
  await db.sublevel('m', { valueEncoding: 'json' }).del('layout');
  await db.close();
  await assert.rejects(StateStore.open(dir), (err: Error & { code?: string }) => err.code === 'STATE_LAYOUT' && /state layout 1, this one reads 3\); use a new work directory/.test(err.message));
});

test('countTokens: exact where the limit could be passed (-1 past it), the first of a field and then one in N sampled exactly, the rest estimated', async () => {
  // Limit 40: texts of up to 13 UTF-16 units cannot pass it; longer ones are always counted exactly.
  const texts = ['Schubert, Franz', 'plumless', '<|endoftext|> is text here', 'word '.repeat(50), ...Array.from({ length: 300 }, (_, i) => `name ${i} Ås`)];
  const batches = () => {
    const out: NewString[][] = [];
    for (let i = 0; i < texts.length; i += 7) out.push(texts.slice(i, i + 7).map((text, j) => ({ id: i + j, crc: 0, field: 'f', text, line: 1 })));
    return out;
  };
  const out = (await run<NewString[]>(batches(), countTokens({ limit: 40, sampleEvery: 4, exactFirst: 1 }))).flat();
  assert.deepEqual(out.map((s) => s.id), texts.map((_, i) => i));
  let exactTotal = 0;
  let total = 0;
  let estimated = 0;
  for (const s of out) {
    const exact = referenceCount(s.text, { disallowedSpecial: new Set() });
    if (s.text.length * 3 > 40) assert.equal(s.tokens, exact > 40 ? -1 : exact, `${s.text}: counted exactly`);
    if (s.estimated) estimated++;
    else assert.equal(s.tokens, exact > 40 ? -1 : exact, s.text);
    if (s.tokens! > 0) {
      total += s.tokens!;
      exactTotal += exact;
    }
  }
  assert.equal(out[3]!.tokens, -1);
  assert.ok(!out.slice(0, 4).some((s) => s.estimated), 'long texts are never estimated');
  // 299 short texts, the first counted, the others one in 4 at random: ~224 estimated (sd 7.5; bounds at 5 sd).
  assert.ok(estimated > 185 && estimated < 262, `${estimated} estimated`);
  assert.ok(Math.abs(total - exactTotal) / exactTotal < 0.05, `estimated total ${total} against exact ${exactTotal}`);
  // Sampling starts after the first 100 strings of the field, which are all counted exactly.
  const warm = (await run<NewString[]>(batches(), countTokens({ limit: 40, sampleEvery: 4, exactFirst: 100 }))).flat();
  assert.ok(!warm.slice(4, 100).some((s) => s.estimated), 'the first 100 exact');
  const later = warm.slice(100).filter((s) => s.estimated).length;
  assert.ok(later > 122 && later < 184, `${later} of the last 204 estimated (~153, sd 6.2; bounds at 5 sd)`);
});

test('guardTokens: skip records the reason; truncate keeps whole characters within the limit', async () => {
  const long = 'Dvořák '.repeat(40);
  const mk = (): NewString[] => [{ id: 0, crc: 0, field: 'f', text: long, json: JSON.stringify(long), line: 1, tokens: -1 }, { id: 1, crc: 0, field: 'f', text: 'short', line: 2, tokens: 1 }];
  const counters = newCounters();
  const [skipped] = await run<NewString[]>([mk()], guardTokens({ limit: 20, policy: 'skip', counters }));
  assert.equal(skipped![0]!.skip, 'too_long');
  assert.equal(skipped![1]!.skip, undefined);
  assert.equal(counters.skipped.too_long, 1);
  const [cut] = await run<NewString[]>([mk()], guardTokens({ limit: 20, policy: 'truncate', counters: newCounters() }));
  assert.ok(long.startsWith(cut![0]!.text) && cut![0]!.text.length > 10);
  assert.equal(cut![0]!.json, undefined, 'the JSON of the whole text goes with it');
  const [formatted] = await run<RequestBatch>([cut!], formatRequests({ model: 'm', encodingFormat: 'float', dimensions: null }));
  assert.equal(JSON.parse(formatted!.bytes.toString().split('\n')[0]!).body.input, cut![0]!.text, 'the request line carries the cut text');
  assert.ok(cut![0]!.tokens! <= 20);
  assert.ok(!truncateToTokens('ab😀'.repeat(20), 7).includes('\uFFFD'));
});

test('formatRequests: the Batch API line shape, byte for byte JSON.stringify; custom ids round-trip', async () => {
  const format = new RequestLineFormat({ model: 'text-embedding-3-small', encodingFormat: 'base64', dimensions: 256 });
  const string = (id: number, crc: number, field: string, text: string): NewString => ({ id, crc, field, text, line: undefined });
  // One line as text, without its newline.
  const lineOf = (s: NewString) => format.format([s]).bytes.toString('utf8').slice(0, -1);
  const texts = ['Say "hi"\n\u2028', 'Dvořák 🎻 \\ \u0000\t', 'x'.repeat(3000), ''];
  texts.forEach((text, i) => {
    const id = [0, 9, 10, 123_456_789_012][i]!;
    assert.equal(
      lineOf(string(id, 0x00ab12cd, 'person', text)),
      JSON.stringify({ custom_id: `00ab12cd_person_${id}`, method: 'POST', url: '/v1/embeddings', body: { model: 'text-embedding-3-small', input: text, encoding_format: 'base64', dimensions: 256 } }),
    );
  });
  const customIdOf = (crc: number, field: string, id: number) => (JSON.parse(lineOf(string(id, crc, field, 't'))) as { custom_id: string }).custom_id;
  assert.equal(customIdOf(0x4ddb0c25, 'related_work', 12), '4ddb0c25_related-work_12');
  // crc-32 gives signed numbers; leading zeros stay.
  assert.deepEqual([customIdOf(-1, 'f', 0), customIdOf(0xab12, 'f', 1), customIdOf(-0x7ffffff0, 'f', 2)], ['ffffffff_f_0', '0000ab12_f_1', '80000010_f_2']);
  assert.deepEqual(parseCustomId('4ddb0c25_related-work_12'), { crc: '4ddb0c25', field: 'related-work', id: 12 });
  assert.equal(parseCustomId('req_1'), undefined);
  const [batch] = await run<RequestBatch>(
    [[{ id: 1, crc: 1, field: 'f', text: 't', line: 1, tokens: 1 }, { id: 2, crc: 1, field: 'f', text: 'x', line: 1, tokens: 9, skip: 'too_long' }, { id: 3, crc: 2, field: 'f', text: 'ü', json: '"ü"', line: 1, tokens: 1, estimated: true }]],
    formatRequests({ model: 'm', encodingFormat: 'float', dimensions: null }),
  );
  const lines = batch!.bytes.toString().split('\n');
  assert.equal(lines.length, 3, 'two lines, each ending in a newline');
  assert.equal(JSON.parse(lines[0]!).body.encoding_format, 'float');
  assert.equal(JSON.parse(lines[1]!).body.input, 'ü');
  assert.deepEqual(batch!.items, [
    { id: 1, field: 'f', tokens: 1, bytes: Buffer.byteLength(lines[0]!) + 1 },
    { id: 2, field: 'f', tokens: 9, skip: 'too_long' },
    { id: 3, field: 'f', tokens: 1, bytes: Buffer.byteLength(lines[1]!) + 1, estimated: true },
  ]);
});

test('writeRequestFiles: rolls by lines and by bytes, records line count, tokens and sha256', async (t) => {
  const dir = tempDir(t);
  const store = await StateStore.open(path.join(dir, 'work'));
  const counters = newCounters();
  // Line 20 passes the byte cap alone, line 22 is over 1 MB, line 23 is multi-byte.
  const pad = (id: number) => (id === 20 ? 'p'.repeat(300) : id === 22 ? 'ü'.repeat(600_000) : id === 23 ? 'Dvořák 🎻' : 'p'.repeat(10));
  const lineOf = (id: number) => (id === 5 ? undefined : JSON.stringify({ custom_id: `x_${id}`, pad: pad(id) }));
  const batchOf = (ids: number[]): RequestBatch => ({
    bytes: Buffer.from(ids.map((id) => (lineOf(id) === undefined ? '' : `${lineOf(id)}\n`)).join('')),
    items: ids.map((id) => (id === 5 ? { id, field: 'f', tokens: 0, skip: 'too_long' } : { id, field: 'f', tokens: 2, bytes: Buffer.byteLength(lineOf(id)!) + 1 })),
  });
  const ids = Array.from({ length: 25 }, (_, id) => id);
  await pipeline(Readable.from([batchOf(ids.slice(0, 12)), batchOf(ids.slice(12))], { objectMode: true }), writeRequestFiles({ store, dir, maxLines: 10, maxBytes: 400, model: 'm', run: 1, counters }));
  const files = readdirSync(dir).filter((n) => n.endsWith('.jsonl')).sort();
  const records = [];
  for await (const r of store.requestFiles()) records.push(r);
  assert.deepEqual(records.map((r) => r.name), files);
  // Worked out by hand from the line sizes (37-38 bytes for ids 0-19 and 21, 24; 331 for 20; 1.2 MB for 22; 46 for
  // 23): ten lines (391 bytes); nine, as line 20 would pass 400 bytes; 20 and 21; 22 alone; 23 and 24.
  assert.deepEqual(records.map((r) => [r.firstId, r.lines]), [[0, 10], [11, 9], [20, 2], [22, 1], [23, 2]]);
  const written = records.map((r) => readFileSync(path.join(dir, r.name), 'utf8')).join('');
  assert.equal(written, ids.flatMap((id) => (lineOf(id) === undefined ? [] : [`${lineOf(id)}\n`])).join(''), 'every line, in order, once');
  for (const r of records) {
    const bytes = readFileSync(path.join(dir, r.name));
    assert.ok(r.bytes <= 400 || r.lines === 1, 'byte cap respected');
    assert.equal(r.bytes, bytes.length);
    assert.equal(r.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.equal(r.tokens, r.lines * 2);
  }
  assert.equal(store.committedId, 25);
  const skipped = [];
  for await (const s of store.skipped()) skipped.push(s);
  assert.deepEqual(skipped, [[5, { reason: 'too_long', field: 'f', tokens: 0 }]]);
  assert.equal(counters.files, records.length);
  await store.close();
});

test('batchItems: groups into arrays of the given size, the rest at the end', async () => {
  const out = await run<number[]>(Array.from({ length: 7 }, (_, i) => i), batchItems<number>(3));
  assert.deepEqual(out, [[0, 1, 2], [3, 4, 5], [6]]);
});
