/**
 * The Weaviate server is built once per machine and version whatever runs at the same time: several processes
 * installing at once (test files side by side, a bench, `npm run weaviate:start`) run one build and share its binary.
 * A stand-in `go` on PATH plays the build (it takes a moment and writes the binary), so this needs no Go and no
 * network, and counts how many builds ran.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { ROOT, tempDir } from './helpers.js';

test('three processes installing at once: one build, one binary, no lock or staging folder left', async (t) => {
  const dir = tempDir(t);
  const fakeBin = path.join(dir, 'fake-go');
  const builds = path.join(dir, 'builds.log');
  const go = path.join(dir, 'go');
  // `go version` answers; `go install` notes itself, takes a moment, and writes the binary where GOBIN says.
  writeFileSync(go, `#!/bin/sh\nif [ "$1" = version ]; then echo go version fake; exit 0; fi\necho "$GOBIN" >> "${builds}"\nsleep 1\nprintf '#!/bin/sh\\n' > "$GOBIN/weaviate-server"\nchmod +x "$GOBIN/weaviate-server"\n`);
  chmodSync(go, 0o755);
  const script = pathToFileURL(path.join(ROOT, 'dist', 'scripts', 'weaviate.js')).href;
  const install = () =>
    new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(script)}); console.log(m.install(() => {}));`], {
        env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, EMBATCH_WEAVIATE_BIN_DIR: fakeBin },
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, out: out.trim() }));
    });
  const results = await Promise.all([install(), install(), install()]);
  const bin = path.join(fakeBin, 'weaviate-server');
  for (const r of results) {
    assert.equal(r.code, 0);
    assert.equal(r.out, bin, 'every process got the one binary');
  }
  assert.equal(readFileSync(builds, 'utf8').trim().split('\n').length, 1, 'one build ran');
  assert.ok(existsSync(bin));
  assert.deepEqual(readdirSync(fakeBin), ['weaviate-server'], 'no lock file or staging folder left');
  // Installed already: no build at all.
  assert.equal((await install()).code, 0);
  assert.equal(readFileSync(builds, 'utf8').trim().split('\n').length, 1);
});
