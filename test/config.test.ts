import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../src/config.js';
import { UsageError } from '../src/errors.js';
import { maxOpenFilesFor } from '../src/store.js';
import { fixture, runCli, tempDir } from './helpers.js';

const noEnv = {};

test('defaults match the seed system where it has them', (t) => {
  const dir = tempDir(t);
  const { config, file } = loadConfig({ cwd: dir, env: noEnv });
  assert.equal(file, undefined);
  assert.equal(config.max_requests_per_file, 50_000);
  assert.equal(config.batch_poll_interval, 300);
  assert.equal(config.batch_max_wait_time, 86_400);
  assert.equal(config.model, 'text-embedding-3-small');
  assert.equal(config.encoding_format, 'base64');
  assert.deepEqual(config.embed_fields, ['composite', 'person', 'title', 'roles', 'subjects', 'genres']);
  assert.deepEqual(config.input.null_values, ['', 'NaN']);
  assert.equal(config.input.on_malformed_row, 'stop');
  assert.equal(config.work_dir, path.join(dir, 'embatch-work'));
});

test('precedence: flag over environment over file over default', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config.yml');
  writeFileSync(file, 'model: text-embedding-3-large\nbatch_poll_interval: 60\nmax_requests_per_file: 1000\ninput:\n  delimiter: ";"\n');
  const env = { EMBATCH_BATCH_POLL_INTERVAL: '30', EMBATCH_MAX_REQUESTS_PER_FILE: '2000', EMBATCH_INPUT__ON_MALFORMED_ROW: 'skip' };
  const { config } = loadConfig({ cwd: dir, env, flags: { max_requests_per_file: 3000 } });
  assert.equal(config.model, 'text-embedding-3-large'); // file
  assert.equal(config.batch_poll_interval, 30); // env over file
  assert.equal(config.max_requests_per_file, 3000); // flag over env
  assert.equal(config.input.delimiter, ';'); // nested key from file kept next to a nested env key
  assert.equal(config.input.on_malformed_row, 'skip');
});

test('OPENAI_API_KEY fills openai_api_key; a relative work_dir in a file is relative to the file', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'sub', 'my.yml');
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, 'work_dir: state-here\n');
  const { config } = loadConfig({ cwd: dir, configPath: file, env: { OPENAI_API_KEY: 'sk-test-123456' } });
  assert.equal(config.openai_api_key, 'sk-test-123456');
  assert.equal(config.work_dir, path.join(dir, 'sub', 'state-here'));
});

test('comma lists from the environment', (t) => {
  const { config } = loadConfig({ cwd: tempDir(t), env: { EMBATCH_EMBED_FIELDS: 'person, title' } });
  assert.deepEqual(config.embed_fields, ['person', 'title']);
});

const rejects = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    assert.match(err.message, pattern);
    return true;
  });

test('an unknown key is a usage error naming the key and where it came from', (t) => {
  const dir = tempDir(t);
  writeFileSync(path.join(dir, 'config.yml'), 'batch_pol_interval: 5\n');
  rejects(() => loadConfig({ cwd: dir, env: noEnv }), /config file .*config\.yml.*unknown key batch_pol_interval/);
  rejects(() => loadConfig({ cwd: tempDir(t), env: { EMBATCH_INPUT__DELIMETER: ';' } }), /environment.*unknown key input\.delimeter/);
});

test('a bad value names the key and what is wrong', (t) => {
  rejects(() => loadConfig({ cwd: tempDir(t), env: noEnv, flags: { max_requests_per_file: 60_000 } }), /command line.*max_requests_per_file/);
  rejects(() => loadConfig({ cwd: tempDir(t), env: noEnv, flags: { encoding_format: 'hex' } }), /encoding_format/);
  rejects(() => loadConfig({ cwd: tempDir(t), env: noEnv, flags: { model: 'text-embedding-ada-002', dimensions: 256 } }), /dimensions: is not supported by text-embedding-ada-002/);
  rejects(() => loadConfig({ cwd: tempDir(t), env: noEnv, flags: { 'input.header': false } }), /input\.columns: is required/);
  rejects(() => loadConfig({ cwd: tempDir(t), env: noEnv, flags: { state_max_open_files: 8 } }), /state_max_open_files/);
});

test('state_max_open_files: automatic by default (few table files while a first prepare fills the store), or as set', (t) => {
  assert.equal(loadConfig({ cwd: tempDir(t), env: noEnv }).config.state_max_open_files, null);
  assert.equal(loadConfig({ cwd: tempDir(t), env: noEnv, flags: { state_max_open_files: 200 } }).config.state_max_open_files, 200);
  assert.equal(maxOpenFilesFor(null, true), 64);
  assert.equal(maxOpenFilesFor(null, false), 1000);
  assert.equal(maxOpenFilesFor(200, true), 200, 'a value set is used as it is');
});

test('a missing --config file and broken YAML are usage errors', (t) => {
  const dir = tempDir(t);
  rejects(() => loadConfig({ cwd: dir, configPath: 'nope.yml', env: noEnv }), /does not exist/);
  writeFileSync(path.join(dir, 'config.yml'), 'model: [unclosed\n');
  rejects(() => loadConfig({ cwd: dir, env: noEnv }), /not valid YAML/);
});


test('a config file holding a key that others can read draws a warning that does not show the key', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'config.yml');
  writeFileSync(file, 'openai_api_key: sk-config-secret-abcdef123456\n', { mode: 0o644 });
  chmodSync(file, 0o644);
  assert.match(loadConfig({ cwd: dir, env: noEnv }).warnings.join('\n'), /can be read by other users; run chmod 600/);
  const r = await runCli(['prepare', fixture('catalog.csv'), '--config', file, '--work-dir', path.join(dir, 'w')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /warning: .*holds an API key and can be read by other users/);
  assert.ok(!r.stderr.includes('sk-config-secret-abcdef123456'));
  chmodSync(file, 0o600);
  assert.deepEqual(loadConfig({ cwd: dir, env: noEnv }).warnings, []);
});

test('the model must be one OpenAI has, and dimensions what it takes: both refused before anything is spent', async (t) => {
  const cwd = tempDir(t);
  rejects(() => loadConfig({ cwd, env: noEnv, flags: { model: 'text-embeding-3-small' } }), /model: "text-embeding-3-small" is not a known embedding model \(text-embedding-3-small, text-embedding-3-large, text-embedding-ada-002\); .*allow_unknown_model: true/);
  rejects(() => loadConfig({ cwd, env: noEnv, flags: { dimensions: 1537 } }), /dimensions: can be at most 1536 for text-embedding-3-small/);
  rejects(() => loadConfig({ cwd, env: noEnv, flags: { dimensions: 2.5 } }), /dimensions/);
  rejects(() => loadConfig({ cwd, env: noEnv, flags: { dimensions: 0 } }), /dimensions/);
  assert.equal(loadConfig({ cwd, env: noEnv, flags: { model: 'text-embedding-3-large', dimensions: 3072 } }).config.dimensions, 3072);
  // The escape hatch for an OpenAI-compatible server's own models; the model and the flag may come from different layers.
  const file = path.join(cwd, 'config.yml');
  writeFileSync(file, 'model: my-local-model\nallow_unknown_model: true\n');
  assert.equal(loadConfig({ cwd, env: { EMBATCH_DIMENSIONS: '4096' } }).config.dimensions, 4096);
  writeFileSync(file, 'model: text-embedding-3-large\n');
  assert.equal(loadConfig({ cwd, env: { EMBATCH_DIMENSIONS: '2000' } }).config.dimensions, 2000, 'judged against the file\'s model, not the default');
  // Through the CLI: exit code 2 and the message, nothing written.
  const work = path.join(tempDir(t), 'work');
  const r = await runCli(['prepare', fixture('catalog.csv'), '--work-dir', work, '--model', 'text-embedding-3-smal']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /"text-embedding-3-smal" is not a known embedding model/);
  assert.equal(existsSync(work), false);
});
