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
