/**
 * vitest globalSetup: every temporary file or folder the tests make goes under one fresh folder, removed when the
 * run ends (pass or fail), so `npm test` leaves nothing behind in the system temp folder. It works through TMPDIR,
 * which os.tmpdir() (and so every test's mkdtemp), the CLI processes the tests start, and the worker forks (spawned
 * after this setup, with this process's environment) all read. Set COKV_KEEP_TEST_TMP=1 to keep it for debugging.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-vitest-'));
  // Like /tmp itself (world-writable, sticky): the permission tests run commands as another user inside it.
  fs.chmodSync(root, 0o1777);
  const before = process.env.TMPDIR;
  process.env.TMPDIR = root;
  return () => {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    if (process.env.COKV_KEEP_TEST_TMP) console.log(`test temp folders kept in ${root}`);
    else fs.rmSync(root, { recursive: true, force: true });
  };
}
