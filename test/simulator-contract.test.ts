/**
 * The simulator answers as OpenAI does. Every response type is checked against schemas written from OpenAI's published
 * OpenAPI description (openai/openai-openapi: Batch, OpenAIFile, ListFilesResponse, ListBatchesResponse,
 * DeleteFileResponse, CreateEmbeddingResponse, ErrorResponse; BatchRequestOutput from the Batch API's first published
 * version, which later versions dropped), so a drift fails here; then each edge case of
 * `../shared/notes/openai-batch.md` section 5 is asked over HTTP, through the real SDK where it has a say.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { encode } from 'gpt-tokenizer/encoding/cl100k_base';
import OpenAI, { toFile } from 'openai';
import { z } from 'zod';
import { hashEmbedding } from '../src/simulator/embedding.js';
import { startSimulator, type SimulatorOptions } from '../src/simulator/server.js';
import { tempDir } from './helpers.js';

const KEY = 'sk-contract-test-1234';

// ---------------------------------------------------------------- schemas (from the OpenAPI description)

const unixtime = z.number().int().nonnegative();
/** Optional fields of the Batch object: absent, or null as the real API sends them. */
const opt = <T extends z.ZodType>(t: T) => t.nullable().optional();

const BatchError = z.object({ code: z.string(), message: z.string(), param: z.string().nullable().optional(), line: z.number().int().nullable().optional() }).strict();
const BatchSchema = z
  .object({
    id: z.string().regex(/^batch_/),
    object: z.literal('batch'),
    endpoint: z.string(),
    model: opt(z.string()),
    errors: opt(z.object({ object: z.literal('list'), data: z.array(BatchError) }).strict()),
    input_file_id: z.string(),
    completion_window: z.string(),
    status: z.enum(['validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', 'cancelling', 'cancelled']),
    output_file_id: opt(z.string()),
    error_file_id: opt(z.string()),
    created_at: unixtime,
    in_progress_at: opt(unixtime),
    expires_at: opt(unixtime),
    finalizing_at: opt(unixtime),
    completed_at: opt(unixtime),
    failed_at: opt(unixtime),
    expired_at: opt(unixtime),
    cancelling_at: opt(unixtime),
    cancelled_at: opt(unixtime),
    request_counts: opt(z.object({ total: z.number().int(), completed: z.number().int(), failed: z.number().int() }).strict()),
    usage: opt(
      z
        .object({
          input_tokens: z.number().int(),
          input_tokens_details: z.object({ cached_tokens: z.number().int() }).strict(),
          output_tokens: z.number().int(),
          output_tokens_details: z.object({ reasoning_tokens: z.number().int() }).strict(),
          total_tokens: z.number().int(),
        })
        .strict(),
    ),
    metadata: z.record(z.string().max(64), z.string().max(512)).nullable().optional(),
  })
  .strict();
const FileSchema = z
  .object({
    id: z.string(),
    object: z.literal('file'),
    bytes: z.number().int().nonnegative(),
    created_at: unixtime,
    expires_at: unixtime.nullable().optional(),
    filename: z.string(),
    purpose: z.enum(['assistants', 'assistants_output', 'batch', 'batch_output', 'fine-tune', 'fine-tune-results', 'vision', 'user_data']),
    status: z.enum(['uploaded', 'processed', 'error']),
    status_details: z.string().nullable().optional(),
  })
  .strict();
const ListFiles = z.object({ object: z.literal('list'), data: z.array(FileSchema), first_id: z.string().nullable(), last_id: z.string().nullable(), has_more: z.boolean() }).strict();
const ListBatches = z.object({ object: z.literal('list'), data: z.array(BatchSchema), first_id: z.string().nullable().optional(), last_id: z.string().nullable().optional(), has_more: z.boolean() }).strict();
const DeleteFile = z.object({ id: z.string(), object: z.literal('file'), deleted: z.boolean() }).strict();
const EmbeddingSchema = z.object({ object: z.literal('embedding'), index: z.number().int().nonnegative(), embedding: z.union([z.array(z.number()), z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/)]) }).strict();
const EmbeddingResponse = z
  .object({ object: z.literal('list'), data: z.array(EmbeddingSchema), model: z.string(), usage: z.object({ prompt_tokens: z.number().int(), total_tokens: z.number().int() }).strict() })
  .strict();
const ErrorObject = z.object({ message: z.string(), type: z.string(), param: z.string().nullable(), code: z.string().nullable() }).strict();
const ErrorResponse = z.object({ error: ErrorObject }).strict();
const OutputLine = z
  .object({
    id: z.string(),
    custom_id: z.string(),
    response: z.object({ status_code: z.number().int(), request_id: z.string(), body: z.record(z.string(), z.unknown()) }).strict().nullable(),
    error: z.object({ code: z.string(), message: z.string() }).strict().nullable(),
  })
  .strict();

function conforms<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  assert.ok(r.success, `${what} does not match OpenAI's schema: ${r.success ? '' : JSON.stringify(r.error.issues).slice(0, 800)}\n${JSON.stringify(value).slice(0, 400)}`);
  return r.data as T;
}

// ---------------------------------------------------------------- helpers

async function sim(t: Parameters<typeof tempDir>[0], options: Omit<SimulatorOptions, 'dir'> = {}) {
  const s = await startSimulator({ dir: path.join(tempDir(t), 'sim'), apiKey: KEY, ...options, engine: { validatingSeconds: 0, finalizingSeconds: 0, linesPerSecond: 100_000, ...options.engine } });
  t.after(() => s.close());
  const client = new OpenAI({ apiKey: KEY, baseURL: s.baseURL, maxRetries: 0 });
  /** A raw call: status, headers and JSON body as the wire has them. */
  const call = async (method: string, route: string, body?: unknown) => {
    const res = await fetch(`${s.baseURL}${route}`, { method, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
  };
  return { s, client, call };
}

type Line = { custom_id: string; method: string; url: string; body: Record<string, unknown> };
const line = (i: number, body: Record<string, unknown> = {}, extra: Partial<Line> = {}): Line => ({ custom_id: `c${i}`, method: 'POST', url: '/v1/embeddings', body: { model: 'text-embedding-3-small', input: `text number ${i}`, encoding_format: 'base64', ...body }, ...extra });

async function upload(client: OpenAI, lines: Array<Line | string>) {
  const text = lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n';
  return client.files.create({ file: await toFile(Buffer.from(text), 'in.jsonl'), purpose: 'batch' });
}

/** Reads the batch until it has ended (it moves on every read, by the engine's clock). */
async function ended(client: OpenAI, id: string): Promise<OpenAI.Batches.Batch> {
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (['completed', 'failed', 'expired', 'cancelled'].includes(b.status)) return b;
    await new Promise((r) => setImmediate(r));
  }
}

async function fileLines(client: OpenAI, id: string | null | undefined): Promise<Array<z.infer<typeof OutputLine>>> {
  if (!id) return [];
  const text = await (await client.files.content(id)).text();
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => conforms(OutputLine, JSON.parse(l), 'a result line'));
}

// ---------------------------------------------------------------- the contract

test('every response type matches OpenAI\'s schemas, and every answer carries x-request-id', async (t) => {
  const { client, call } = await sim(t);
  const lines = [line(0), line(1, { encoding_format: 'float', dimensions: 8 }), line(2, { input: '' })];
  const file = conforms(FileSchema, await upload(client, lines), 'the uploaded File');
  conforms(FileSchema, (await call('GET', `/files/${file.id}`)).json, 'a retrieved File');
  const created = await call('POST', '/batches', { input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h', metadata: { k: 'v' } });
  conforms(BatchSchema, created.json, 'a created Batch');
  const done = conforms(BatchSchema, await ended(client, String(created.json!.id)), 'an ended Batch');
  assert.equal(done.status, 'completed');
  assert.deepEqual(done.request_counts, { total: 3, completed: 2, failed: 1 });
  assert.ok(done.usage && done.usage.input_tokens > 0);
  conforms(ListBatches, (await call('GET', '/batches?limit=10')).json, 'a batch list page');
  conforms(ListFiles, (await call('GET', '/files')).json, 'a file list page');

  const output = await fileLines(client, done.output_file_id);
  assert.equal(output.length, 2);
  for (const l of output) conforms(EmbeddingResponse, l.response?.body, 'an output line body');
  const errors = await fileLines(client, done.error_file_id);
  assert.equal(errors.length, 1);
  conforms(ErrorResponse, errors[0]!.response?.body, 'an error line body');

  for (const format of ['float', 'base64'] as const) {
    const r = await call('POST', '/embeddings', { model: 'text-embedding-3-small', input: ['a', 'b'], encoding_format: format });
    assert.equal(r.status, 200);
    conforms(EmbeddingResponse, r.json, `an Embedding response (${format})`);
  }
  const refused = await call('POST', '/embeddings', { model: 'text-embedding-3-small', input: '' });
  assert.equal(refused.status, 400);
  conforms(ErrorResponse, refused.json, 'an error envelope');
  const unauthorized = await fetch(`${(await sim(t)).s.baseURL}/files`, { headers: { authorization: 'Bearer wrong' } });
  assert.equal(unauthorized.status, 401);
  conforms(ErrorResponse, await unauthorized.json(), 'a 401 error envelope');
  conforms(DeleteFile, (await call('DELETE', `/files/${file.id}`)).json, 'a file deletion');

  for (const r of [created, refused, await call('GET', '/batches'), await call('GET', '/nope')]) assert.match(r.headers.get('x-request-id') ?? '', /^req_[0-9a-f]{32}$/);
  const ids = new Set([created, refused].map((r) => r.headers.get('x-request-id')));
  assert.equal(ids.size, 2, 'a new id per request');
});

// ---------------------------------------------------------------- section 5, row by row

test('a model that does not exist: 404 model_not_found directly, a failed batch (param body.model, line 1) in a batch', async (t) => {
  const { client, call } = await sim(t);
  const r = await call('POST', '/embeddings', { model: 'text-embeding-3-small', input: 'x' });
  assert.equal(r.status, 404);
  assert.deepEqual(r.json, { error: { message: 'The model `text-embeding-3-small` does not exist or you do not have access to it.', type: 'invalid_request_error', param: null, code: 'model_not_found' } });
  const file = await upload(client, [line(0, { model: 'text-embeding-3-small' }), line(1, { model: 'text-embeding-3-small' })]);
  const b = await ended(client, (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' })).id);
  assert.equal(b.status, 'failed');
  assert.equal(b.output_file_id ?? null, null);
  assert.deepEqual(b.errors?.data?.map((e) => [e.code, e.param, e.line]), [['model_not_found', 'body.model', 1]]);
});

test('dimensions: refused for ada-002, when not an integer of at least 1, or above the model\'s size; never a 500', async (t) => {
  const { call } = await sim(t);
  const ask = (model: string, dimensions: unknown) => call('POST', '/embeddings', { model, input: 'x', dimensions });
  const ada = await ask('text-embedding-ada-002', 256);
  assert.equal(ada.status, 400);
  assert.equal((ada.json!.error as { message: string }).message, 'This model does not support specifying dimensions.');
  for (const bad of [0, -5, 2.5, '256', 1537]) {
    const r = await ask('text-embedding-3-small', bad);
    assert.equal(r.status, 400, `dimensions ${JSON.stringify(bad)}`);
    assert.equal((r.json!.error as { param: string }).param, 'dimensions');
  }
  assert.equal((await ask('text-embedding-3-large', 3072)).status, 200);
  assert.equal((await ask('text-embedding-3-large', 3073)).status, 400);
  const ok = await ask('text-embedding-3-small', 5);
  assert.equal((ok.json!.data as Array<{ embedding: number[] }>)[0]!.embedding.length, 5);
});

test('an unknown body parameter is refused by name; token-id inputs are legal and mean the same text', async (t) => {
  const { call } = await sim(t);
  const r = await call('POST', '/embeddings', { model: 'text-embedding-3-small', input: 'x', foo: 1 });
  assert.equal(r.status, 400);
  assert.deepEqual(r.json!.error, { message: 'Unrecognized request argument supplied: foo', type: 'invalid_request_error', param: null, code: null });
  const text = 'Schubert, Franz';
  const ids = encode(text);
  const asText = await call('POST', '/embeddings', { model: 'text-embedding-3-small', input: text });
  const asIds = await call('POST', '/embeddings', { model: 'text-embedding-3-small', input: ids });
  const asIdLists = await call('POST', '/embeddings', { model: 'text-embedding-3-small', input: [ids, ids] });
  for (const r of [asIds, asIdLists]) assert.equal(r.status, 200, JSON.stringify(r.json));
  const vector = (r: typeof asText, i = 0) => (r.json!.data as Array<{ embedding: number[] }>)[i]!.embedding;
  assert.deepEqual(vector(asIds), vector(asText));
  assert.deepEqual(vector(asIdLists, 1), vector(asText));
  assert.deepEqual(asIds.json!.usage, { prompt_tokens: ids.length, total_tokens: ids.length });
});

test('an input over 8,192 tokens: the recorded 400, type invalid_request_error, param and code null', async (t) => {
  const { call } = await sim(t);
  const text = 'word '.repeat(9000);
  const n = encode(text).length;
  const r = await call('POST', '/embeddings', { model: 'text-embedding-3-small', input: text });
  assert.equal(r.status, 400);
  assert.deepEqual(r.json!.error, {
    message: `This model's maximum context length is 8192 tokens, however you requested ${n} tokens (${n} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.`,
    type: 'invalid_request_error',
    param: null,
    code: null,
  });
});

test('a line whose body the endpoint refuses is a 400 line in the error file; the batch completes', async (t) => {
  const { client } = await sim(t);
  const lines = [line(0), line(1, { input: '' }), line(2, { foo: true }), line(3, { dimensions: 4000 }), line(4)];
  const file = await upload(client, lines);
  const b = await ended(client, (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' })).id);
  assert.equal(b.status, 'completed');
  assert.deepEqual(b.request_counts, { total: 5, completed: 2, failed: 3 });
  const errors = await fileLines(client, b.error_file_id);
  assert.deepEqual(errors.map((e) => e.custom_id).sort(), ['c1', 'c2', 'c3']);
  for (const e of errors) {
    assert.equal(e.error, null, 'request errors come with error: null');
    assert.equal(e.response?.status_code, 400);
    assert.equal((e.response?.body.error as { type: string }).type, 'invalid_request_error');
  }
  assert.match(JSON.stringify(errors.find((e) => e.custom_id === 'c2')), /Unrecognized request argument supplied: foo/);
  assert.deepEqual((await fileLines(client, b.output_file_id)).map((l) => l.custom_id).sort(), ['c0', 'c4']);
});

test('file-level problems fail the whole batch at validation: wrong url (invalid_url), bad JSON, duplicate custom_id, mixed models', async (t) => {
  const { client } = await sim(t);
  const cases: Array<[string, Array<Line | string>]> = [
    ['invalid_url', [line(0), line(1, {}, { url: '/v1/chat/completions' })]],
    ['invalid_json_line', [line(0), '{"custom_id": "c1", ']],
    ['duplicate_custom_id', [line(0), line(0)]],
    ['mismatched_model', [line(0), line(1, { model: 'text-embedding-3-large' })]],
  ];
  for (const [code, lines] of cases) {
    const file = await upload(client, lines);
    const b = await ended(client, (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' })).id);
    assert.equal(b.status, 'failed', code);
    assert.equal(b.errors?.data?.[0]?.code, code);
    assert.equal(b.errors?.data?.[0]?.line, 2, `${code} names the line`);
  }
});

test('cancelling a batch that has ended answers 409 (the SDK\'s ConflictError), code null', async (t) => {
  const { client, call } = await sim(t);
  const file = await upload(client, [line(0)]);
  const b = await ended(client, (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' })).id);
  await assert.rejects(client.batches.cancel(b.id), (err: unknown) => err instanceof OpenAI.ConflictError && err.status === 409);
  const raw = await call('POST', `/batches/${b.id}/cancel`);
  assert.deepEqual(raw.json, { error: { message: "Cannot cancel a batch with status 'completed'.", type: 'invalid_request_error', param: null, code: null } });
});

test('GET /files honours limit, after, order and purpose, with first_id and last_id', async (t) => {
  const { client, call } = await sim(t);
  const made: string[] = [];
  for (let i = 0; i < 5; i++) {
    made.push((await upload(client, [line(i)])).id);
    // created_at has a resolution of one second: the order among equal times is by id, as the listing sorts.
  }
  const all = ListFiles.parse((await call('GET', '/files?purpose=batch&order=asc')).json);
  assert.equal(all.data.length, 5);
  const ordered = all.data.map((f) => f.id);
  assert.deepEqual([...ordered].sort(), [...made].sort());
  const first = ListFiles.parse((await call('GET', '/files?purpose=batch&order=asc&limit=2')).json);
  assert.deepEqual(first.data.map((f) => f.id), ordered.slice(0, 2));
  assert.equal(first.first_id, ordered[0]);
  assert.equal(first.last_id, ordered[1]);
  assert.equal(first.has_more, true);
  const next = ListFiles.parse((await call('GET', `/files?purpose=batch&order=asc&limit=2&after=${first.last_id}`)).json);
  assert.deepEqual(next.data.map((f) => f.id), ordered.slice(2, 4));
  const desc = ListFiles.parse((await call('GET', '/files?purpose=batch&limit=10')).json);
  assert.deepEqual(desc.data.map((f) => f.id), [...ordered].reverse(), 'newest first by default');
  assert.equal(desc.has_more, false);
  assert.equal(ListFiles.parse((await call('GET', '/files?purpose=batch_output')).json).data.length, 0);
  assert.equal((await call('GET', '/files?limit=0')).status, 400);
  // Through the SDK's cursor paging too.
  const paged: string[] = [];
  for await (const f of client.files.list({ limit: 2, order: 'asc', purpose: 'batch' })) paged.push(f.id);
  assert.deepEqual(paged, ordered);
});

test('embeddings answers carry x-ratelimit-* headers; ada-002 answers as text-embedding-ada-002-v2', async (t) => {
  const { call } = await sim(t, { limits: { rpm: 100, tpm: 50_000 } });
  const r = await call('POST', '/embeddings', { model: 'text-embedding-ada-002', input: 'hello world' });
  assert.equal(r.status, 200);
  assert.equal(r.json!.model, 'text-embedding-ada-002-v2');
  assert.equal(r.headers.get('x-ratelimit-limit-requests'), '100');
  assert.equal(r.headers.get('x-ratelimit-limit-tokens'), '50000');
  assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '99');
  assert.equal(r.headers.get('x-ratelimit-remaining-tokens'), String(50_000 - 2));
  assert.match(r.headers.get('x-ratelimit-reset-tokens') ?? '', /^\d+ms$/);
  // With no limits configured, the defaults (tier 5) are reported all the same.
  const d = await (await sim(t)).call('POST', '/embeddings', { model: 'text-embedding-3-small', input: 'x' });
  assert.equal(d.headers.get('x-ratelimit-limit-requests'), '10000');
  assert.equal(d.headers.get('x-ratelimit-limit-tokens'), '10000000');
});

test('deleting the input file of a running batch changes nothing for the batch; retrieve and list keep working', async (t) => {
  const { s, client } = await sim(t, { engine: { linesPerSecond: 1 } });
  const file = await upload(client, [line(0), line(1), line(2)]);
  const created = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' });
  for (;;) if ((await client.batches.retrieve(created.id)).status === 'in_progress') break;
  await client.files.delete(file.id);
  await assert.rejects(client.files.retrieve(file.id), (err: unknown) => err instanceof OpenAI.NotFoundError);
  s.engine.options.linesPerSecond = 100_000;
  const b = await ended(client, created.id);
  assert.equal(b.status, 'completed');
  assert.equal(b.request_counts?.completed, 3);
  const listed = [];
  for await (const x of client.batches.list()) listed.push(x.id);
  assert.deepEqual(listed, [created.id]);
});

test('output lines come back in a full shuffle, seeded by the batch: not in input order, not even nearly', async (t) => {
  const { client } = await sim(t);
  const n = 3000;
  const file = await upload(client, Array.from({ length: n }, (_, i) => line(i, { dimensions: 4 })));
  const b = await ended(client, (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' })).id);
  const order = (await fileLines(client, b.output_file_id)).map((l) => Number(l.custom_id.slice(1)));
  assert.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), 'every line once');
  // A shuffle within windows of 512 lines moves no line further than 511 places; a full shuffle moves most further.
  const far = order.filter((id, at) => Math.abs(id - at) >= 512).length;
  assert.ok(far > n / 2, `${far} of ${n} lines moved 512 places or more`);
  // The same batch read again gives the same file.
  const again = (await fileLines(client, b.output_file_id)).map((l) => Number(l.custom_id.slice(1)));
  assert.deepEqual(again, order);
});

test('a real-time answer lists its embeddings out of input order, each under its input\'s index, as the SDK returns them', async (t) => {
  const { client } = await sim(t);
  const input = Array.from({ length: 40 }, (_, i) => `text number ${i}`);
  const r = await client.embeddings.create({ model: 'text-embedding-3-small', input, dimensions: 8 });
  const indexes = r.data.map((d) => d.index);
  assert.deepEqual([...indexes].sort((a, b) => a - b), input.map((_, i) => i), 'every input answered once');
  assert.notDeepEqual(indexes, input.map((_, i) => i), 'not in input order');
  for (const d of r.data) assert.deepEqual(d.embedding, Array.from(hashEmbedding(input[d.index]!, 8)), `item ${d.index} is its own input's`);
});

test('create-time refusals: an unknown input file, a completion window other than 24h', async (t) => {
  const { client, call } = await sim(t);
  const missing = await call('POST', '/batches', { input_file_id: 'file-doesnotexist', endpoint: '/v1/embeddings', completion_window: '24h' });
  assert.equal(missing.status, 400);
  assert.equal(conforms(ErrorResponse, missing.json, 'a create-time error').error.param, 'input_file_id');
  const file = await upload(client, [line(0)]);
  const window = await call('POST', '/batches', { input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '48h' });
  assert.equal(window.status, 400);
  assert.equal(conforms(ErrorResponse, window.json, 'a create-time error').error.param, 'completion_window');
});
