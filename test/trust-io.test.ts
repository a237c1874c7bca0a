/**
 * The exit-code contract under I/O faults and hostile strings: one line, exit 1, no stack trace, no control
 * characters from a file echoed to the terminal; outputs are written atomically, never over a non-regular
 * file, and a second writer of the same output is refused.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CokvError, sanitize, systemErrorLine } from '../src/errors.js';
import { gv, writeGguf } from '../src/model/loaders/gguf-writer.js';
import { openGguf } from '../src/model/loaders/gguf.js';
import { lockOutput, writeFileAtomic } from '../src/util/files.js';
import { expectCokvError, haveAssets, asset, repoRoot, tmpDir } from './helpers.js';

const tmp = tmpDir('cokv-trust-io-');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('messages', () => {
  it('escape control characters from files (no newline, no terminal escape)', () => {
    const f = path.join(tmp, 'esc.gguf');
    writeGguf(f, { metadata: { 'general.architecture': gv.str('x\u001b[2J\u001b]0;owned\u0007\nsecond line') }, tensors: [] });
    const err = expectCokvError(() => openGguf(f), f, 'x\\x1b[2J');
    // eslint-disable-next-line no-control-regex
    expect(err.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
    expect(sanitize('a\tb')).toBe('a\\x09b');
    expect(new CokvError('x'.repeat(5000)).message.length).toBeLessThan(2100);
  });

  it('system errors become one line naming the path', () => {
    const e = Object.assign(new Error('EACCES: permission denied, open \'/x/y\''), { code: 'EACCES', path: '/x/y', syscall: 'open' });
    expect(systemErrorLine(e)).toBe('/x/y: permission denied (EACCES, open)');
    expect(systemErrorLine(new Error('plain'))).toBeUndefined();
  });
});

describe('atomic writes and locks', () => {
  it('replace a regular file, refuse folders, devices, pipes and links, and leave no temp file', () => {
    const f = path.join(tmp, 'out.json');
    writeFileAtomic(f, 'one');
    writeFileAtomic(f, 'two');
    expect(fs.readFileSync(f, 'utf8')).toBe('two');
    expectCokvError(() => writeFileAtomic(f, 'three', { overwrite: false, what: '--out' }), '--out', 'already exists');
    expectCokvError(() => writeFileAtomic(tmp, 'x'), 'is a folder');
    expectCokvError(() => writeFileAtomic('/dev/null', 'x', { what: '--out' }), '--out /dev/null: is a device');
    const link = path.join(tmp, 'link.json');
    fs.symlinkSync(f, link);
    expectCokvError(() => writeFileAtomic(link, 'x'), 'symbolic link');
    expect(fs.readFileSync(f, 'utf8')).toBe('two');
    expectCokvError(() => writeFileAtomic(path.join(tmp, 'no/such/dir/x.json'), 'x'), 'no such file or folder');
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('a second writer of one output is refused; a stale lock is taken over', () => {
    const f = path.join(tmp, 'locked.json');
    const a = lockOutput(f);
    // A lock held by another live process (our parent) refuses.
    fs.writeFileSync(`${f}.lock`, `${process.ppid}\n`);
    expectCokvError(() => lockOutput(f), '--out', `pid ${process.ppid}`);
    // A lock whose process is gone is stale.
    fs.writeFileSync(`${f}.lock`, '999999999\n');
    const b = lockOutput(f);
    b.release();
    a.release();
    expect(fs.existsSync(`${f}.lock`)).toBe(false);
  });
});

describe.skipIf(!haveAssets)('the CLI on I/O faults', () => {
  const cli = path.join(repoRoot, 'src/cli/run.ts');
  // Rows 691 (generate_stdout_devfull) and 692 (profile_show_stdout_devfull) of the reliability review, and inspect.
  const profile = path.join(repoRoot, 'results/profiles/stories260K__loglik.json');
  const commands: [string, string[]][] = [
    ['inspect', ['inspect', asset('models/stories260K')]],
    ['generate', ['generate', '--model', asset('models/stories260K'), '--prompt', 'Once upon a time', '--max-tokens', '8', '--temperature', '0']],
    ...(fs.existsSync(profile) ? [['profile show', ['profile', 'show', profile]] as [string, string[]]] : []),
  ];
  for (const [name, args] of commands) {
    it(`${name} with stdout on a full device: one line, exit 1, no stack trace`, () => {
      const out = fs.openSync('/dev/full', 'w');
      const r = spawnSync(process.execPath, ['--import', 'tsx', cli, ...args],
        { cwd: repoRoot, stdio: ['ignore', out, 'pipe'], encoding: 'utf8', timeout: 60_000 });
      fs.closeSync(out);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/standard output: .*no space left/);
    });
  }
});
