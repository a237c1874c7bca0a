import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { expect, vi } from 'vitest';
import { CokvError } from '../src/errors.js';
import { createBackend, type BackendKind } from '../src/backend/select.js';
import { NativeBackend } from '../src/backend/native.js';
import type { Backend } from '../src/backend/types.js';
import { gv, type GgufMetaValue } from '../src/model/loaders/gguf-writer.js';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests resolve shared assets from here). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** `../shared/assets` beside the repo. */
export const assetsDir = path.resolve(repoRoot, '../shared/assets');
export const haveAssets = fs.existsSync(assetsDir);
if (!haveAssets) console.warn(`[cokv tests] ${assetsDir} is absent: tests that need shared assets are skipped`);

export function asset(...parts: string[]): string {
  return path.join(assetsDir, ...parts);
}

/** A fresh temporary directory under the system temp folder. */
export function tmpDir(prefix = 'cokv-test-'): string {
  return fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? '/tmp'), prefix));
}

/** Run the CLI from source (like `npx cokv …` after a build); returns exit code and output. */
export function cokv(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), ...args], {
    cwd: repoRoot, encoding: 'utf8', timeout: 120_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Run the CLI in this process (no tsx start-up per run: for many quick failures): exit code and what it wrote.
 * The CLI is imported on first use, so files that never call this do not load it.
 */
export async function cokvInProcess(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { main } = await import('../src/cli/main.js');
  let stdout = '', stderr = '';
  const capture = (stream: NodeJS.WriteStream, add: (s: string) => void) => vi.spyOn(stream, 'write').mockImplementation((s: string | Uint8Array) => {
    add(typeof s === 'string' ? s : Buffer.from(s).toString('utf8'));
    return true;
  });
  const spies = [capture(process.stdout, (s) => { stdout += s; }), capture(process.stderr, (s) => { stderr += s; })];
  try {
    return { code: await main(args), stdout, stderr };
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
}

/**
 * A command run without blocking the test's event loop (vitest's worker RPC times out when a test blocks it for
 * a minute, as one long spawnSync on a loaded machine can): exit code and output, killed after `timeoutMs`.
 */
export function runAsync(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? repoRoot, env: opts.env ?? process.env });
    let stdout = '', stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Largest absolute difference between `a` and the reference `b`, relative to the range of `b`. */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let lo = Infinity, hi = -Infinity, d = 0;
  for (let i = 0; i < b.length; i++) {
    lo = Math.min(lo, b[i]);
    hi = Math.max(hi, b[i]);
    d = Math.max(d, Math.abs(a[i] - b[i]));
  }
  return d / (hi - lo);
}

/** Largest absolute difference between `got` and the reference `want`, relative to max |want|. */
export function relErr(got: Float32Array, want: Float32Array): number {
  let err = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return err / scale;
}

/** Expect `fn` to throw a one-line CokvError whose message contains (string) or matches (RegExp) every pattern. */
export function expectCokvError(fn: () => unknown, ...patterns: (RegExp | string)[]): CokvError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a CokvError').toBeInstanceOf(CokvError);
  const msg = (err as CokvError).message;
  for (const p of patterns) {
    if (typeof p === 'string') expect(msg).toContain(p);
    else expect(msg).toMatch(p);
  }
  expect(msg).not.toContain('\n');
  return err as CokvError;
}

/** A CLI user error: exit 1 and one line on stderr matching `re`, with no stack trace. */
export function expectUserError(r: { code: number; stderr: string }, re: RegExp): void {
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(re);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/**
 * A backend of `kind` computing exactly in f32 (native: `int8Activations: false`, so block-quantized weights meet f32
 * activations as in the TS reference), for tests whose bound is f32 rounding. Native's default (int8 activations,
 * like llama.cpp) is tested against its own bounds (qdot-kernels, fixtures-arch).
 */
export function exactBackend(kind: BackendKind): Backend {
  return kind === 'native' ? NativeBackend.create({ int8Activations: false }) : createBackend(kind);
}

/** The TS reference plus whichever of native and wasm load here (native needs the addon built by npm ci). */
export function availableBackends(): BackendKind[] {
  return ['ts', ...(['native', 'wasm'] as const).filter((k) => {
    try {
      createBackend(k);
      return true;
    } catch {
      return false;
    }
  })];
}

/** GGUF tokenizer metadata of a small SentencePiece-type vocabulary: <unk>, <s>, </s>, then t3 … t(n−1). */
export function spmTokenizerMeta(n: number): Record<string, GgufMetaValue> {
  const tokens = Array.from({ length: n }, (_, i) => (i < 3 ? ['<unk>', '<s>', '</s>'][i] : `t${i}`));
  return {
    'tokenizer.ggml.model': gv.str('llama'),
    'tokenizer.ggml.tokens': gv.arr('string', tokens),
    'tokenizer.ggml.scores': gv.arr('f32', tokens.map((_, i) => -i)),
    'tokenizer.ggml.token_type': gv.arr('i32', tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : 1))),
    'tokenizer.ggml.bos_token_id': gv.u32(1),
    'tokenizer.ggml.eos_token_id': gv.u32(2),
  };
}

/** A `cokv serve` process started by startServeProcess. */
export interface ServeProcess {
  /** The process (the test stops it by pid). */
  child: ChildProcess;
  /** The address it printed: `http://127.0.0.1:PORT/v1`. */
  url: string;
  /** Everything the server wrote to stderr so far (one line per request). */
  log: () => string;
  /** Its exit code once it has exited (null when a signal ended it). */
  exited: Promise<number | null>;
}

/**
 * Start `cokv serve … --port 0` (the TypeScript sources through tsx, bound to loopback on a free port) and resolve
 * once it prints its address, within 60 s; `onChild` receives the process at once, so the test can stop it by pid
 * whatever happens.
 */
export function startServeProcess(args: string[], onChild: (c: ChildProcess) => void): Promise<ServeProcess> {
  const runCli = path.join(repoRoot, 'src/cli/run.ts');
  const child = spawn(process.execPath, ['--import', 'tsx', runCli, 'serve', ...args, '--port', '0'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  onChild(child);
  let out = '', err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cokv serve printed no address within 60 s: ${err}`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /cokv: serving \S+ at (http:\/\/127\.0\.0\.1:\d+\/v1)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1], log: () => err, exited });
      }
    });
    // Before the address: the start failed (after it, resolve has settled the promise and this does nothing).
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`cokv serve exited (${code}): ${err}`)); });
  });
}

/** startServeProcess, resolving with the address only. */
export function startServe(args: string[], onChild: (c: ChildProcess) => void): Promise<string> {
  return startServeProcess(args, onChild).then((s) => s.url);
}
