import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateUuid5 } from 'weaviate-client';
import { hashValue, objectUuid, uuid5 } from '../transforms/build-objects.js';
import { decodeLine, toVector } from '../transforms/decode-results.js';
import { float32ToBase64 } from '../transforms/write-objects-jsonl.js';

test('hash_value and object ids are the seed system\'s (its verified test vectors)', () => {
  assert.equal(hashValue('Schubert, Franz'), '2569bf28f2ad2c97559065312a4f57ed');
  assert.equal(objectUuid(hashValue('Schubert, Franz'), 'person'), 'aa0eabca-6e48-59fa-923e-12cc1b6d7040');
  assert.equal(hashValue('Contributor'), '13242e24ad5f5caeda4829649ffa3263');
  assert.equal(objectUuid(hashValue('Contributor'), 'roles'), '03bc3bf8-7ea8-5b13-b71f-fccf9706ffc6');
  for (const name of ['x', 'hello', 'Dvořák_person', '']) assert.equal(uuid5(name), generateUuid5(name));
  assert.notEqual(objectUuid(hashValue('plumless'), 'person'), objectUuid(hashValue('buckeroo'), 'person'));
});

test('base64 and float embeddings decode to the same Float32Array', () => {
  const v = new Float32Array([0.5, -0.25, 1e-7, 3.5]);
  assert.deepEqual(toVector(float32ToBase64(v)), v);
  assert.deepEqual(toVector(Array.from(v)), v);
  assert.match(String(toVector('AAA=')), /not a whole number/);
  assert.equal(toVector([]), 'no embedding');
});

test('decodeLine: each way a line can fail has its own code', () => {
  const ok = { custom_id: '0000abcd_person_5', response: { status_code: 200, body: { data: [{ embedding: [0.1, 0.2] }] } }, error: null };
  const line = (json: unknown) => decodeLine({ file: 'f', line: 1, json }, 2);
  assert.ok('vector' in line(ok));
  assert.equal((line({ ...ok, custom_id: 'req-1' }) as { code: string }).code, 'unknown_custom_id');
  assert.equal((line({ ...ok, response: { status_code: 400, body: { error: { code: 'invalid_value', message: 'no' } } } }) as { code: string; retryable: boolean }).code, 'invalid_value');
  assert.equal((line({ ...ok, response: null, error: { code: 'batch_expired', message: 'late' } }) as { retryable: boolean }).retryable, true);
  assert.equal((line({ ...ok, response: { status_code: 200, body: { data: [{ embedding: [0.1, 0.2, 0.3] }] } } }) as { code: string }).code, 'wrong_dimensions');
  assert.equal((line({ ...ok, response: { status_code: 200, body: { data: [{ embedding: [0.1, 'x'] }] } } }) as { code: string }).code, 'bad_embedding');
  assert.equal((decodeLine({ file: 'f', line: 3, corrupt: 'not valid JSON' }, 2) as { code: string }).code, 'corrupt_line');
});

test('parseResults: the base64 cut gives exactly JSON.parse\'s object, for any chunking, and flags what is not JSON', async () => {
  const { parseResults } = await import('../transforms/parse-results.js');
  const { Readable } = await import('node:stream');
  const b64 = float32ToBase64(new Float32Array(64).map((_, i) => Math.sin(i)));
  const body = (embedding: unknown) => ({ object: 'list', data: [{ object: 'embedding', index: 0, embedding }], model: 'm', usage: { prompt_tokens: 2, total_tokens: 2 } });
  const lines = [
    JSON.stringify({ id: 'b1', custom_id: '0000abcd_person_1', response: { status_code: 200, request_id: 'r', body: body(b64) }, error: null }),
    // Python-style separators, a float embedding, an escaped slash in base64, the key twice, a message naming the key
    `{"id": "b2", "custom_id": "0000abcd_title_2", "response": {"status_code": 200, "body": ${JSON.stringify(body(b64)).replace(/":/g, '": ')}}, "error": null}`,
    JSON.stringify({ custom_id: '0000abcd_title_3', response: { status_code: 200, body: body([0.5, 0.25]) } }),
    JSON.stringify({ custom_id: '0000abcd_title_4', response: { status_code: 200, body: body(b64) } }).replace(/\//g, '\\/'),
    `{"custom_id":"0000abcd_title_5","response":{"status_code":200,"body":{"data":[{"embedding":"${b64}","embedding":""}]}}}`,
    JSON.stringify({ custom_id: '0000abcd_title_6', response: null, error: { code: 'x', message: 'bad "embedding": "value"' } }),
    `{"custom_id":"0000abcd_title_7","response":{"status_code":200,"body":{"data":[{"embedding":"${b64}"}]}`, // truncated
    'not json at all',
    '',
    '   ',
  ];
  const text = lines.join('\r\n') + '\n';
  const expected = lines.flatMap((l, i): Array<{ line: number; json?: unknown; corrupt?: true }> => {
    if (!l.trim()) return [];
    try {
      return [{ line: i + 1, json: JSON.parse(l) as unknown }];
    } catch {
      return [{ line: i + 1, corrupt: true }];
    }
  });
  for (const chunkSize of [1, 7, 100, 1 << 20]) {
    const bytes = Buffer.from(text);
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
    const got: Array<{ line: number; json?: unknown; corrupt?: string }> = [];
    for await (const p of Readable.from(chunks).pipe(parseResults('f'))) got.push(p);
    assert.equal(got.length, expected.length, `chunk size ${chunkSize}`);
    got.forEach((g, i) => {
      assert.equal(g.line, expected[i]!.line);
      if (expected[i]!.corrupt) assert.match(g.corrupt ?? '', /not valid JSON/, `line ${g.line}`);
      else assert.deepEqual(g.json, expected[i]!.json, `line ${g.line}, chunk size ${chunkSize}`);
    });
  }
});

test('parseResults: an over-long line is reported with its number and the lines after it still parse', async () => {
  const { parseResults, MAX_RESULT_LINE } = await import('../transforms/parse-results.js');
  const { Readable } = await import('node:stream');
  const huge = Buffer.alloc(MAX_RESULT_LINE + 10, 0x61);
  const got: Array<{ line: number; json?: unknown; corrupt?: string }> = [];
  const source = Readable.from([Buffer.from('{"a":1}\n'), huge.subarray(0, 1 << 23), huge.subarray(1 << 23), Buffer.from('\n{"a":2}')]);
  for await (const p of source.pipe(parseResults('f'))) got.push(p);
  assert.deepEqual(got.map((g) => g.line), [1, 2, 3]);
  assert.match(got[1]!.corrupt ?? '', /longer than/);
  assert.deepEqual(got[2]!.json, { a: 2 });
});

test('decodeLine keeps the base64 text for the sink only when it is exactly the canonical encoding', () => {
  const v = new Float32Array([0.5, -0.25, 1e-7, 3.5, 2]); // 20 bytes: padded base64
  const b64 = float32ToBase64(v);
  const line = (embedding: string) => decodeLine({ file: 'f', line: 1, json: { custom_id: '0000abcd_person_5', response: { status_code: 200, body: { data: [{ embedding }] } } } }, 5) as { base64?: string; vector?: Float32Array };
  assert.equal(line(b64).base64, b64);
  // The decoder skips characters outside the alphabet: the vector is the same, the text must not be copied as is.
  for (const odd of [b64.slice(0, 4) + '\n' + b64.slice(4), b64.slice(0, 4) + '"' + b64.slice(4), b64.slice(0, -1) + '\u0001', b64.replace(/=+$/, '')]) {
    const r = line(odd);
    if (r.vector) assert.deepEqual(r.vector, v);
    assert.equal(r.base64, undefined, JSON.stringify(odd));
  }
});

test('a result file in any order gives the same objects: ordered and fully shuffled replays agree, over many text chunks', async (t) => {
  const { mkdtempSync, readFileSync, rmSync, writeFileSync, createWriteStream } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { writeCatalog } = await import('../scripts/gen-catalog.js');
  const { LineSpool } = await import('../src/simulator/line-spool.js');
  const { requestLines, runCli } = await import('./helpers.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'embatch-order-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const csv = path.join(dir, 'c.csv');
  const out = createWriteStream(csv);
  await writeCatalog(out, 3000);
  await new Promise<void>((r) => out.end(() => r()));
  const work = path.join(dir, 'work');
  const env = { EMBATCH_DIMENSIONS: '8' };
  assert.equal((await runCli(['prepare', csv, '--work-dir', work, '--quiet'], { env })).code, 0);
  // One result line per request line, in request order; then the same lines in a full shuffle.
  const ordered = path.join(dir, 'ordered.jsonl');
  const lines = requestLines(work);
  assert.ok(lines.length > 5000, `${lines.length} strings: several text chunks (about 900 new strings each)`);
  writeFileSync(ordered, lines.map((l, i) => JSON.stringify({ id: `r${i}`, custom_id: l.custom_id, response: { status_code: 200, request_id: `q${i}`, body: { object: 'list', data: [{ object: 'embedding', index: 0, embedding: float32ToBase64(new Float32Array(8).fill(i / lines.length)) }], model: 'text-embedding-3-small', usage: { prompt_tokens: 1, total_tokens: 1 } } }, error: null })).join('\n') + '\n');
  const shuffled = path.join(dir, 'shuffled.jsonl');
  await (await LineSpool.over(ordered)).shuffleInto(shuffled, path.join(dir, 'none'), 7);
  assert.notEqual(readFileSync(shuffled, 'utf8'), readFileSync(ordered, 'utf8'));
  const objects = async (file: string) => {
    const sink = path.join(dir, `${path.basename(file)}.objects`);
    const r = await runCli(['replay', file, '--work-dir', work, '--sink', `jsonl:${sink}`, '--json'], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).embeddedLines, lines.length);
    return readFileSync(sink, 'utf8').trim().split('\n').sort();
  };
  const fromOrdered = await objects(ordered);
  assert.deepEqual(await objects(shuffled), fromOrdered);
  assert.ok(fromOrdered.length >= lines.length);
});
