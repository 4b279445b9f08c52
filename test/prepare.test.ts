import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { writeCatalog } from '../scripts/gen-catalog.js';
import { countTokens } from 'gpt-tokenizer/encoding/cl100k_base';
import { CLI, fixture, fixtureStrings, freeze, requestFiles, requestLines, runCli, tempDir, ROOT, waitFor } from './helpers.js';

const prepareJson = async (args: string[], opts: Parameters<typeof runCli>[1] = {}) => {
  const r = await runCli(['prepare', ...args, '--json'], opts);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
};

test('prepare the bundled catalog: multi-line composite, NaN skipped, one request per distinct string', async (t) => {
  const work = tempDir(t);
  const s = await prepareJson([fixture('catalog.csv'), '--work-dir', work]);
  const expected = fixtureStrings('catalog.csv');
  assert.equal(s.rows, expected.rows);
  const lines = requestLines(work);
  assert.equal(s.newStrings, expected.strings.size);
  assert.deepEqual(lines.map((l) => l.body.input).sort(), [...expected.strings.keys()].sort(), 'each distinct string once');
  assert.equal(lines.length, s.newStrings);
  assert.equal(s.requestLines, lines.length);
  assert.equal(new Set(lines.map((l) => l.body.input)).size, lines.length, 'no string requested twice');
  assert.equal(new Set(lines.map((l) => l.custom_id)).size, lines.length);
  assert.ok(!lines.some((l) => l.body.input === 'NaN' || l.body.input === ''), 'null tokens never embedded');
  assert.equal(s.skipped.null_value, expected.nullCells);
  assert.ok(lines.some((l) => l.body.input.includes('\nTitle: ')), 'multi-line composite kept whole');
  // "Schubert, Franz, 1797-1828" is a person and a subject: embedded once.
  assert.equal(lines.filter((l) => l.body.input === 'Schubert, Franz, 1797-1828').length, 1);
  for (const l of lines) {
    assert.equal(l.method, 'POST');
    assert.equal(l.url, '/v1/embeddings');
    assert.equal(l.body.model, 'text-embedding-3-small');
    assert.equal(l.body.encoding_format, 'base64');
    assert.match(l.custom_id, /^[0-9a-f]{8}_(composite|person|title|roles|subjects|genres)_\d+$/);
  }
  const tokens = [...expected.strings.keys()].reduce((n, text) => n + countTokens(text, { disallowedSpecial: new Set() }), 0);
  assert.equal(s.tokens, tokens);
  // text-embedding-3-small at OpenAI's list prices: $0.01 per million tokens with the Batch API, $0.02 in real time.
  assert.ok(Math.abs(s.estimatedCostUsd.batch - tokens * 0.01e-6) < 1e-12 && Math.abs(s.estimatedCostUsd.realtime - tokens * 0.02e-6) < 1e-12);
  assert.equal(s.filesWritten.length, 1);
  // The file on disk is the one recorded: complete, named in order.
  assert.deepEqual(requestFiles(work), s.filesWritten);
});

test('rerun writes nothing new; 10 new strings write exactly 10 lines', async (t) => {
  const work = tempDir(t);
  const dir = tempDir(t);
  const base = path.join(dir, 'base.csv');
  await writeFile(base, (out) => writeCatalog(out, 500));
  const first = await prepareJson([base, '--work-dir', work]);
  assert.ok(first.newStrings > 500);
  // Read back through a small LevelDB table cache (state_max_open_files): the same answer.
  const again = await prepareJson([base, '--work-dir', work, '--set', 'state_max_open_files=16']);
  assert.equal(again.newStrings, 0);
  assert.equal(again.requestLines, 0);
  assert.equal(again.alreadyKnown, first.distinctStrings);
  assert.deepEqual(again.filesWritten, []);

  // Ten new strings: the same file plus one row whose person and title are new (its other fields are known).
  const grown = path.join(dir, 'grown.csv');
  const extra = Array.from({ length: 5 }, (_, i) => `x,NaN,NaN,"Newperson, ${i}",Author,New title ${i},NaN,NaN,NaN,NaN,NaN,n${i},n${i}#A`).join('\n');
  writeFileSync(grown, readFileSync(base, 'utf8') + extra + '\n');
  const more = await prepareJson([grown, '--work-dir', work]);
  assert.equal(more.newStrings, 10);
  assert.equal(more.requestLines, 10);
  const newest = readFileSync(more.filesWritten[0], 'utf8').trim().split('\n').map((l) => JSON.parse(l).body.input);
  assert.deepEqual(newest.sort(), [...Array.from({ length: 5 }, (_, i) => `Newperson, ${i}`), ...Array.from({ length: 5 }, (_, i) => `New title ${i}`)].sort());
});

test('stdin input gives the same requests as the file', async (t) => {
  const fromFile = tempDir(t);
  const fromPipe = tempDir(t);
  await prepareJson([fixture('catalog.csv'), '--work-dir', fromFile]);
  const s = await prepareJson(['-', '--work-dir', fromPipe], { input: readFileSync(fixture('catalog.csv')) });
  assert.equal(s.input, '<stdin>');
  assert.deepEqual(requestLines(fromPipe), requestLines(fromFile));
});

test('BOM and CRLF: the BOM is not part of the first column name, CRLF inside a quoted field is kept', async (t) => {
  const work = tempDir(t);
  const s = await prepareJson([fixture('bom-crlf.csv'), '--work-dir', work]);
  assert.equal(s.rows, 2);
  const inputs = requestLines(work).map((l) => l.body.input);
  assert.ok(inputs.includes('Grieg, Edvard'));
  assert.ok(inputs.includes('Title: Maskarade\r\nComposer: Nielsen, Carl'));
  assert.ok(!inputs.some((i) => i.endsWith('\r')), 'record CRLF is not part of a value');
});

test('NFD and NFC spellings are different strings unless normalisation is configured', async (t) => {
  const raw = tempDir(t);
  await prepareJson([fixture('nfd.csv'), '--work-dir', raw, '--embed-fields', 'person']);
  const names = requestLines(raw).map((l) => l.body.input);
  assert.equal(names.length, 2);
  assert.notEqual(names[0], names[1]);
  assert.equal(names[0]!.normalize('NFC'), names[1]!.normalize('NFC'));
  const nfc = tempDir(t);
  await prepareJson([fixture('nfd.csv'), '--work-dir', nfc, '--embed-fields', 'person', '--set', 'input.normalize=NFC']);
  assert.deepEqual(requestLines(nfc).map((l) => l.body.input), ['Dvořák, Antonín']);
});

test('the CRC32 collision pair is two strings with two requests', async (t) => {
  const work = tempDir(t);
  await prepareJson([fixture('collision.csv'), '--work-dir', work, '--embed-fields', 'person']);
  const lines = requestLines(work);
  assert.deepEqual(lines.map((l) => l.body.input).sort(), ['buckeroo', 'plumless']);
  assert.equal(lines[0]!.custom_id.slice(0, 8), '4ddb0c25');
  assert.equal(lines[1]!.custom_id.slice(0, 8), '4ddb0c25');
  assert.notEqual(lines[0]!.custom_id, lines[1]!.custom_id);
});

test('an input over 8,192 tokens is skipped and counted by default, or truncated when configured', async (t) => {
  const work = tempDir(t);
  const s = await prepareJson([fixture('overlong.csv'), '--work-dir', work, '--embed-fields', 'composite']);
  assert.equal(s.skipped.too_long, 1);
  assert.equal(requestLines(work).length, 1);
  const cut = tempDir(t);
  const c = await prepareJson([fixture('overlong.csv'), '--work-dir', cut, '--embed-fields', 'composite', '--set', 'over_long_inputs=truncate']);
  assert.equal(c.skipped.too_long, undefined);
  const long = requestLines(cut).find((l) => l.body.input.startsWith('Title: Long'))!;
  assert.ok(long.body.input.length < 53_000 && long.body.input.length > 10_000);
});

test('a malformed row stops the run with exit 1 naming file and line; skip records it and goes on', async (t) => {
  const stop = await runCli(['prepare', fixture('malformed.csv'), '--work-dir', tempDir(t)]);
  assert.equal(stop.code, 1);
  assert.match(stop.stderr, /error: .*malformed\.csv:4: malformed CSV/);
  assert.doesNotMatch(stop.stderr, /\n\s+at /, 'no stack trace');
  const work = tempDir(t);
  const s = await prepareJson([fixture('malformed.csv'), '--work-dir', work, '--on-malformed-row', 'skip']);
  assert.equal(s.rows, 2);
  assert.equal(s.rowsRejected, 2);
  const rejects = readFileSync(s.rejectsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(rejects.map((r) => r.line), [4, 5]);
  assert.ok(rejects.every((r) => r.file.endsWith('malformed.csv') && r.reason));
});

test('usage and config errors exit 2; --help describes every command', async (t) => {
  const bad = await runCli(['prepare', fixture('catalog.csv'), '--work-dir', tempDir(t), '--set', 'no_such_key=1']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown key no_such_key/);
  const flag = await runCli(['prepare', fixture('catalog.csv'), '--no-such-flag']);
  assert.equal(flag.code, 2);
  const missing = await runCli(['prepare', path.join(ROOT, 'nope.csv'), '--work-dir', tempDir(t)]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nope\.csv: cannot read the input file/);
  const help = await runCli(['prepare', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--on-malformed-row/);
  const top = await runCli(['--help']);
  assert.match(top.stdout, /prepare <input>/);
});

/**
 * `prepare -` fed from a pipe the test holds: the process reads what it is given and then waits, so it cannot finish
 * before the test has seen what it waits for on disk.
 */
function feedablePrepare(work: string, source: string, csv: string, extra: string[] = []) {
  const child = spawn(process.execPath, [CLI, 'prepare', '-', '--source', source, '--work-dir', work, '--quiet', ...extra], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdin.on('error', () => {}); // killed while being fed
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  const bytes = readFileSync(csv);
  let fed = 0;
  return {
    child,
    closed,
    stderr: () => stderr,
    /** Feeds the CSV in 64 KiB pieces until `seen()` holds (checked after each piece, then while the process works). */
    async feedUntil(seen: () => boolean): Promise<void> {
      while (!seen()) {
        if (fed < bytes.length) {
          const piece = bytes.subarray(fed, fed + 64 * 1024);
          fed += piece.length;
          if (!child.stdin.write(piece)) await new Promise((r) => child.stdin.once('drain', r));
        } else await waitFor(seen, 60_000);
      }
    },
    /**
     * Feeds it until `seen()` holds while the process is frozen (SIGSTOP): what it still had buffered cannot move the
     * state on between the look and what follows. Returns with the process frozen.
     */
    async freezeWhen(seen: () => boolean): Promise<void> {
      for (;;) {
        await this.feedUntil(seen);
        await freeze(child.pid!);
        if (seen()) return;
        child.kill('SIGCONT');
      }
    },
    /** The rest of the CSV, then the end of input. */
    async finish(): Promise<number | null> {
      child.stdin.end(bytes.subarray(fed));
      return closed;
    },
  };
}

/** The request folder: the highest complete file's number, and the open (partial) file's number and lines. */
const requestDirState = (work: string) => {
  const names = existsSync(path.join(work, 'requests')) ? readdirSync(path.join(work, 'requests')) : [];
  const seqOf = (n: string) => Number(/_(\d+)\.jsonl/.exec(n)?.[1] ?? 0);
  const partial = names.find((n) => n.endsWith('.partial'));
  let partialLines = 0;
  try {
    if (partial) partialLines = readFileSync(path.join(work, 'requests', partial), 'utf8').split('\n').filter(Boolean).length;
  } catch {
    // renamed (complete) between the listing and the read: counted at the next look
  }
  const complete = names.filter((n) => /^batch_requests_\d+\.jsonl$/.test(n)).map(seqOf);
  return { lastComplete: complete.length ? Math.max(...complete) : 0, partialSeq: partial ? seqOf(partial) : 0, partialLines };
};

test('a second process on the same work directory is refused while the first runs', async (t) => {
  const work = tempDir(t);
  const csv = path.join(tempDir(t), 'c.csv');
  await writeFile(csv, (out) => writeCatalog(out, 4000));
  const first = feedablePrepare(work, csv, csv, ['--set', 'max_requests_per_file=1000']);
  // The first is certainly running (and holds the work directory) while it waits for the rest of its input.
  await first.feedUntil(() => requestDirState(work).lastComplete >= 1);
  const second = await runCli(['prepare', fixture('catalog.csv'), '--work-dir', work]);
  assert.equal(second.code, 1);
  assert.match(second.stderr, /in use by another embatch process/);
  assert.equal(await first.finish(), 0, first.stderr());
});

test('killed after a commit point and rerun, prepare writes the same request lines as an uninterrupted run', async (t) => {
  const dir = tempDir(t);
  const csv = path.join(dir, 'crash.csv');
  await writeFile(csv, (out) => writeCatalog(out, 20_000));
  const opts = ['--set', 'max_requests_per_file=2000'];
  const clean = path.join(dir, 'clean');
  assert.equal((await runCli(['prepare', csv, '--work-dir', clean, '--quiet', ...opts])).code, 0);
  const expected = normalised(clean);
  assert.ok(requestFiles(clean).length >= 12, `${requestFiles(clean).length} files in a clean run`);

  // Each try is killed once it has completed a request file of its own (a commit point: written, renamed, recorded)
  // and written lines of the next one into its partial file (work after it); the state on disk after the kill shows
  // both, so where each kill landed is known.
  const crashed = path.join(dir, 'crashed');
  let committedBefore = 0;
  for (const more of [1, 3, 4]) {
    const run = feedablePrepare(crashed, csv, csv, opts);
    const target = committedBefore + more;
    await run.freezeWhen(() => {
      const s = requestDirState(crashed);
      return s.lastComplete >= target && s.partialSeq === s.lastComplete + 1 && s.partialLines > 0;
    });
    run.child.kill('SIGKILL');
    assert.equal(await run.closed, null, 'killed, not finished');
    const landed = requestDirState(crashed);
    assert.ok(landed.lastComplete >= target && landed.partialSeq === landed.lastComplete + 1 && landed.partialLines > 0, `killed after file ${landed.lastComplete}, with ${landed.partialLines} lines of file ${landed.partialSeq} written`);
    committedBefore = landed.lastComplete;
  }
  const final = await runCli(['prepare', csv, '--work-dir', crashed, '--quiet', ...opts, '--json']);
  assert.equal(final.code, 0, final.stderr);
  assert.ok(!readdirSync(path.join(crashed, 'requests')).some((n) => n.endsWith('.partial')), 'no partial file left');
  const got = normalised(crashed);
  assert.equal(got.length, expected.length, 'no string lost, none requested twice');
  assert.deepEqual(got, expected);
});

/** All request lines of a work directory, sorted (file boundaries differ between a clean and an interrupted run). */
function normalised(work: string): string[] {
  return requestFiles(work)
    .flatMap((f) => readFileSync(f, 'utf8').split('\n').filter(Boolean))
    .sort();
}

async function writeFile(file: string, write: (out: NodeJS.WritableStream & import('node:stream').Writable) => Promise<void>) {
  const out = createWriteStream(file);
  await write(out);
  await new Promise<void>((resolve) => out.end(() => resolve()));
}


test('`embatch ... | head`: a reader that goes away ends the command quietly, not as an unexpected failure', async (t) => {
  const work = tempDir(t);
  const child = spawn(process.execPath, [CLI, 'prepare', fixture('catalog.csv'), '--work-dir', work, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  // The reader closes its end before the summary is written, as `head` does once it has its lines.
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /unexpected failure|EPIPE/);
  assert.equal(requestLines(work).length, fixtureStrings('catalog.csv').strings.size, 'the work itself was done');
});

test('--simulate is taken by the commands that talk to OpenAI and refused (exit 2) by those that do not', async (t) => {
  const work = tempDir(t);
  for (const args of [['prepare', fixture('catalog.csv')], ['retry'], ['index'], ['reset', '--yes']]) {
    const r = await runCli([...args, '--work-dir', work, '--simulate']);
    assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /Unknown argument: simulate/);
  }
  assert.equal((await runCli(['status', '--work-dir', work, '--simulate', '--json'])).code, 0);
});
