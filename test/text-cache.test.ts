import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TextCache } from '../src/text-cache.js';

const chunk = (first: number, n: number) => Array.from({ length: n }, (_, i) => `t${first + i}`);

test('text cache: finds any id of a cached chunk in any order; a gap or an id past a chunk is a miss', () => {
  const cache = new TextCache(1000);
  // Added out of order, as a shuffled result file meets them.
  for (const first of [200, 0, 100, 300]) cache.add(first, chunk(first, first === 100 ? 50 : 100), 10);
  const ids = [399, 0, 250, 120, 99, 149, 300, 201];
  for (const id of ids) assert.equal(cache.find(id), `t${id}`);
  assert.equal(cache.find(150), undefined, 'past the end of the chunk at 100 (50 texts)');
  assert.equal(cache.find(400), undefined);
  assert.equal(cache.find(-1), undefined);
  assert.equal(cache.bytes, 40);
});

test('text cache: stays within its byte budget, the least recently used chunk going first', () => {
  const cache = new TextCache(30);
  cache.add(0, chunk(0, 10), 10);
  cache.add(10, chunk(10, 10), 10);
  cache.add(20, chunk(20, 10), 10);
  assert.equal(cache.find(5), 't5'); // 0 is now the most recently used: 10 is the oldest
  cache.add(30, chunk(30, 10), 10);
  assert.equal(cache.bytes, 30);
  assert.equal(cache.find(15), undefined, 'the least recently used chunk went');
  for (const id of [5, 25, 35]) assert.equal(cache.find(id), `t${id}`);
  // A chunk larger than the budget still goes in, alone.
  cache.add(40, chunk(40, 10), 100);
  assert.equal(cache.find(45), 't45');
  assert.equal(cache.find(5), undefined);
  assert.equal(cache.bytes, 100);
});
