// tools/readme-commands.mjs (npm run test:readme): how it finds README commands and its conventions.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot, tmpDir } from './helpers.js';

const tool = path.join(repoRoot, 'tools/readme-commands.mjs');
const md = [
  '# t', '', '```sh', '# a comment line', 'echo one   # trailing comment', 'echo two \\', '  --flag', "echo 'three", "  four'", '', '# Remote (needs: a cluster):',
  'kubectl apply -f x', 'kubectl wait job', '', 'echo five   # needs: your model', 'npm ci', 'false', 'echo six   # prints: nope', '```', '',
  '```ts', 'console.log(1)', '```', '', '```console', '$ echo seven', 'seven', '```', '',
].join('\n');

describe('tools/readme-commands.mjs', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'README.md');
  fs.writeFileSync(file, md);

  it('lists shell commands: continuations, open quotes, console prompts; needs: per line and per paragraph', () => {
    const r = spawnSync(process.execPath, [tool, '--list', '--file', file], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('README.md:5\n  echo one\n');
    expect(r.stdout).toContain('README.md:6\n  echo two --flag\n');
    expect(r.stdout).toContain("README.md:8\n  echo 'three\n    four'\n"); // the newline and spaces inside the quotes stay
    expect(r.stdout).toContain('README.md:12 [needs: a cluster]\n  kubectl apply -f x\n');
    expect(r.stdout).toContain('README.md:13 [needs: a cluster]\n');
    expect(r.stdout).toContain('README.md:15 [needs: your model]\n  echo five\n');
    expect(r.stdout).toContain('README.md:26\n  echo seven\n');
    expect(r.stdout).not.toContain('console.log');
  });

  it('runs them: PASS, FAIL (exit status, missing # prints: text), SKIP; exit 1 on a failure', () => {
    const r = spawnSync(process.execPath, [tool, '--file', file, '--timeout', '20'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^PASS README\.md:5 {2}echo one/m);
    expect(r.stdout).toMatch(/^SKIP README\.md:12 .*\(needs: a cluster\)/m);
    expect(r.stdout).toMatch(/^SKIP README\.md:16 {2}npm ci {2}\(run by \.ci\/run\)/m);
    expect(r.stdout).toMatch(/^FAIL README\.md:17 {2}false {2}\(exit status 1/m);
    expect(r.stdout).toMatch(/^FAIL README\.md:18 .*output lacks 'nope'/m);
    expect(r.stdout).toMatch(/readme-commands: 4 passed, 2 failed, 4 skipped/);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});
