/**
 * `cokv profile export`: the kvpress LUKVPress table (CoKV allocation per keep rate, largest-remainder rounding,
 * .npy bytes), Attention Matching shares, DuoAttention TSV, CSV, and the command's one-line errors. The Python side
 * (the table loaded by kvpress itself) is tools/kvpress/test_press.py, outside npm test.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { beforeAll, describe, expect, it } from 'vitest';
import { CokvError } from '../src/errors.js';
import {
  attentionMatchingShares, decodeNpy, duoTsv, encodeNpy, exportProfile, formatE18, kvpressCounts, kvpressTable,
  profileCsv, type ExportValues,
} from '../src/game/profile-export.js';
import { cokvAllocation } from '../src/press/allocators/cokv.js';
import { registerProfileExport } from '../src/cli/profile-export.js';
import { asset, haveAssets, repoRoot, tmpDir } from './helpers.js';

// Weight digests of this file's runs go to a private cache, not the user's.
process.env.COKV_CACHE_DIR = tmpDir('cokv-export-cache-');

/** 2 layers × 3 KV heads with distinct values, one negative. */
const small: ExportValues = { values: [0.5, -0.2, 2.0, 0.1, 1.0, 0.05], layers: [0, 1], numKvHeads: 3 };

describe('kvpress counts: the CoKV allocation at a keep rate', () => {
  it('equals cokvAllocation (redistribute) plus the window when keep × length is a whole budget per head', () => {
    const values = [3, -1, 0.2, 0.7, 5, 0, 1.1, 0.4, 2.2, -0.3, 0.9, 0.05, 4, 0.6, 0.01, 1.7];
    const v: ExportValues = { values, layers: [0, 1, 2, 3], numKvHeads: 4 };
    for (const [keep, alpha] of [[25, 1], [50, 2], [10, 0], [75, 1]] as const) {
      const length = 200, window = 8;
      const budget = (keep * length) / 100;
      const want = cokvAllocation(values, alpha, 4, 4, budget - window, length - window, true).flat().map((c) => c + window);
      expect(kvpressCounts(v, keep, { length, window, alpha })).toEqual(want);
    }
  });

  it('largest remainders: the row total is exact and no count is more than one token off its exact share', () => {
    // 6 heads, keep 20% of 1001: T = round(6·20·1001/100) = round(1201.2) = 1201; window 2 per head, 1189 shared
    // (no head reaches its cap of 999).
    const counts = kvpressCounts(small, 20, { length: 1001, window: 2, alpha: 1 });
    expect(counts.reduce((a, b) => a + b, 0)).toBe(1201);
    // α = 1: weights = values − min(values) = [0.7, 0, 2.2, 0.3, 1.2, 0.25]
    const w = small.values.map((x) => x + 0.2);
    const wsum = w.reduce((a, b) => a + b, 0);
    const exact = w.map((x) => (x / wsum) * 1189);
    counts.forEach((c, i) => {
      expect(c - 2).toBeGreaterThanOrEqual(Math.floor(exact[i]));
      expect(c - 2).toBeLessThanOrEqual(Math.floor(exact[i]) + 1);
    });
    // The α lowest-valued head keeps only the window.
    expect(counts[1]).toBe(2);
    // The leftover 212 − Σ⌊exact⌋ tokens went to the largest fractional parts.
    const floors = exact.map(Math.floor);
    const extra = counts.map((c, i) => c - 2 - floors[i]);
    const frac = exact.map((x) => x - Math.floor(x));
    const given = frac.filter((_, i) => extra[i] === 1), withheld = frac.filter((_, i) => extra[i] === 0);
    expect(Math.min(...given)).toBeGreaterThan(Math.max(...withheld));
  });

  it('rounds the row total half to even, keeps ≥ 1 token per head, caps heads at the length', () => {
    // n·keep·length/100 = 6·25·1/100 = 1.5 → 2; 6·50·1/100 = 3; 6·75·1/100 = 4.5 → 4; but every head keeps ≥ 1.
    const one = (keep: number, length: number) => kvpressCounts(small, keep, { length, window: 8, alpha: 1 });
    const sum = (c: number[]) => c.reduce((a, b) => a + b, 0);
    expect(sum(one(25, 10))).toBe(15); // 6·25·10/100 = 15 exactly
    expect(sum(one(75, 3))).toBe(14); // 13.5 → 14 (even)
    expect(sum(one(25, 3))).toBe(6); // 4.5 → 4 (even) < 6 heads → one token each
    expect(one(25, 3)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(sum(one(45, 10))).toBe(27);
    // keep 99% of 10 tokens: T = 59.4 → 59, window 8 < ⌊59/6⌋ = 9 → every head ≥ 8 and none above 10
    const high = one(99, 10);
    expect(sum(high)).toBe(59);
    expect(Math.max(...high)).toBe(10);
    expect(Math.min(...high)).toBeGreaterThanOrEqual(8);
    // Too few tokens for the window: the per-head floor shrinks to ⌊T/n⌋ (here 2 tokens of 8).
    const low = one(20, 10);
    expect(sum(low)).toBe(12);
    expect(Math.min(...low)).toBe(2);
  });

  it('the table is [99][row][head] prune ratios 1 − kept/length, row r = compression (r+1)%', () => {
    const o = { length: 64, window: 4, alpha: 1 };
    const t = kvpressTable(small, o);
    expect(t.length).toBe(99 * 6);
    for (const r of [0, 24, 49, 98]) {
      const counts = kvpressCounts(small, 99 - r, o);
      counts.forEach((c, i) => expect(t[r * 6 + i]).toBe(Math.fround(1 - c / 64)));
      // Divided back by the length and rounded, each entry gives the integer budget again.
      counts.forEach((c, i) => expect(Math.round((1 - t[r * 6 + i]) * 64)).toBe(c));
    }
    // Per head, rows need not be monotone: here at keep 6% (23 tokens) the window floor is ⌊23/6⌋ = 3 and the most
    // valuable head keeps 6; at 7% (27 tokens) the floor is the whole window, 4, and only 3 tokens are shared.
    expect(kvpressCounts(small, 6, o)).toEqual([4, 3, 6, 3, 4, 3]);
    expect(kvpressCounts(small, 7, o)).toEqual([5, 4, 5, 4, 5, 4]);
  });

  it('refuses bad settings and values with one line', () => {
    expect(() => kvpressTable(small, { length: 0, window: 8, alpha: 1 })).toThrow(/^--length: 0 must be a positive integer$/);
    expect(() => kvpressTable(small, { length: 64, window: -1, alpha: 1 })).toThrow(/^--window: /);
    expect(() => kvpressTable({ ...small, values: [1, 2, 3] }, { length: 64, window: 8, alpha: 1 })).toThrow(/3 values do not make 2 layers × 3 KV heads/);
    expect(() => profileCsv({ ...small, values: [1, NaN, 0, 0, 0, 0] })).toThrow(/value 1 is not a finite number/);
  });
});

describe('.npy writer and reader', () => {
  // numpy 2.4.6: np.save(b, np.array([[1.5, -2, 0.25], [3, 4, 1e-3]], dtype=np.float32))
  const numpyBytes = Buffer.from(
    '934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c202773686170' +
    '65273a2028322c2033292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020' +
    '2020202020202020202020202020200a0000c03f000000c00000803e00004040000080406f12833a', 'hex');

  it('writes the bytes numpy writes (format 1.0, <f4, C order, header padded to 64)', () => {
    const data = new Float32Array([1.5, -2, 0.25, 3, 4, 1e-3]);
    expect(Buffer.from(encodeNpy({ shape: [2, 3], data }))).toEqual(numpyBytes);
    const big = encodeNpy({ shape: [99, 4, 4], data: new Float32Array(99 * 16) });
    const hlen = big[8] | (big[9] << 8);
    expect((10 + hlen) % 64).toBe(0);
    expect(Buffer.from(big.subarray(10, 10 + hlen)).toString('latin1')).toMatch(/^\{'descr': '<f4', 'fortran_order': False, 'shape': \(99, 4, 4\), \} *\n$/);
  });

  it('reads numpy\'s file and its own back', () => {
    const a = decodeNpy(numpyBytes);
    expect(a.shape).toEqual([2, 3]);
    expect([...a.data]).toEqual([...new Float32Array([1.5, -2, 0.25, 3, 4, 1e-3])]);
    const t = kvpressTable(small, { length: 64, window: 4, alpha: 1 });
    const back = decodeNpy(encodeNpy({ shape: [99, 2, 3], data: t }));
    expect(back.shape).toEqual([99, 2, 3]);
    expect(back.data).toEqual(t);
  });

  it('refuses what it cannot read with one line', () => {
    expect(() => decodeNpy(new Uint8Array([1, 2, 3]), 't.npy')).toThrow(/^t\.npy: not a \.npy file \(bad magic\)$/);
    const f8 = Buffer.from(numpyBytes);
    f8.write("'<f8'", f8.indexOf("'<f4'"), 'latin1');
    expect(() => decodeNpy(f8)).toThrow(/dtype <f8: only little-endian float32/);
    const fortran = Buffer.from(numpyBytes);
    fortran.write('True ', fortran.indexOf('False'), 'latin1');
    expect(() => decodeNpy(fortran)).toThrow(/Fortran-order/);
    expect(() => decodeNpy(numpyBytes.subarray(0, numpyBytes.length - 4))).toThrow(/holds 20 data bytes, shape 2×3 needs 24/);
    expect(() => encodeNpy({ shape: [2, 2], data: new Float32Array(3) })).toThrow(/shape 2×2 holds 4 values, the data has 3/);
  });
});

describe('Attention Matching, DuoAttention and CSV', () => {
  it('attention-matching: {"L{l}H{h}": share}, values clipped at 0, shares sum to 1, model layer numbers', () => {
    const s = attentionMatchingShares({ ...small, layers: [3, 5] });
    expect(Object.keys(s)).toEqual(['L3H0', 'L3H1', 'L3H2', 'L5H0', 'L5H1', 'L5H2']);
    const sum = 0.5 + 2.0 + 0.1 + 1.0 + 0.05;
    expect(s.L3H1).toBe(0);
    expect(s.L3H2).toBeCloseTo(2.0 / sum, 15);
    expect(Object.values(s).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    const none = attentionMatchingShares({ values: [-1, -2], layers: [0], numKvHeads: 2 });
    expect(none).toEqual({ L0H0: 0.5, L0H1: 0.5 });
  });

  it('duo: one row per layer, one tab-separated column per KV head, %.18e as numpy.savetxt, scaled into [0, 1]', () => {
    // numpy '%.18e' of each value
    expect(formatE18(0.60546875)).toBe('6.054687500000000000e-01');
    expect(formatE18(1)).toBe('1.000000000000000000e+00');
    expect(formatE18(0)).toBe('0.000000000000000000e+00');
    expect(formatE18(1 / 3)).toBe('3.333333333333333148e-01');
    expect(formatE18(2.5e-7)).toBe('2.499999999999999887e-07');
    expect(formatE18(123.456)).toBe('1.234560000000000031e+02');
    const lines = duoTsv(small).trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    const rows = lines.map((l) => l.split('\t').map(Number));
    expect(rows).toEqual([[0.25, 0, 1], [0.05, 0.5, 0.025]]);
  });

  it('csv: layer,kv_head,value,rank with rank 1 the largest value', () => {
    const lines = profileCsv({ ...small, layers: [2, 7] }).trimEnd().split('\n');
    expect(lines).toEqual([
      'layer,kv_head,value,rank', '2,0,0.5,3', '2,1,-0.2,6', '2,2,2,1', '7,0,0.1,4', '7,1,1,2', '7,2,0.05,5',
    ]);
  });

  it('exportProfile: the kvpress bytes are the .npy of the table', () => {
    const o = { length: 32, window: 2, alpha: 1 };
    const bytes = exportProfile('kvpress', small, o) as Uint8Array;
    expect(decodeNpy(bytes).data).toEqual(kvpressTable(small, o));
    expect(() => exportProfile('kvpress', small)).toThrow(CokvError);
  });
});

describe.skipIf(!haveAssets)('cokv profile export (command)', () => {
  const tiny = asset('models/cokv-retrieval-tiny');
  const profile = path.join(repoRoot, 'results/profiles/cokv-retrieval-tiny__loglik.json');
  const gemma = path.join(repoRoot, 'test/fixtures/models/gemma3-tiny/hf-bf16');
  let dir = '';
  beforeAll(() => { dir = tmpDir('cokv-export-'); });

  /** The `profile export` command as main.ts wires it: resolves to the CokvError it reported, or undefined. */
  async function exportCmd(...args: string[]): Promise<{ error?: CokvError; stderr: string }> {
    let error: CokvError | undefined;
    const program = new Command().exitOverride();
    registerProfileExport(program.command('profile'), async (fn) => {
      try {
        await fn();
      } catch (e) {
        if (!(e instanceof CokvError)) throw e;
        error = e;
      }
    });
    const write = process.stderr.write.bind(process.stderr);
    let stderr = '';
    process.stderr.write = ((s: string) => { stderr += s; return true; }) as typeof process.stderr.write;
    try {
      await program.parseAsync(['profile', 'export', ...args], { from: 'user' });
    } finally {
      process.stderr.write = write;
    }
    return { error, stderr };
  }

  it('writes every format for the model the profile was made on', async () => {
    const values = (JSON.parse(fs.readFileSync(profile, 'utf8')) as { values: number[][] }).values.flat();
    const out = (f: string) => path.join(dir, f);
    let r = await exportCmd(profile, '--model', tiny, '--format', 'kvpress', '--out', out('t.npy'), '--length', '512');
    expect(r.error).toBeUndefined();
    expect(r.stderr).toMatch(/kvpress LUKVPress table \[99, 4, 4\] \(compression ratios 1%…99% of 512 tokens, window 8, α 1\), 4 layers/);
    const t = decodeNpy(fs.readFileSync(out('t.npy')));
    expect(t.shape).toEqual([99, 4, 4]);
    expect(t.data).toEqual(kvpressTable({ values, layers: [0, 1, 2, 3], numKvHeads: 4 }, { length: 512, window: 8, alpha: 1 }));
    r = await exportCmd(profile, '--model', tiny, '--format', 'attention-matching', '--out', out('am.json'));
    expect(r.error).toBeUndefined();
    expect(Object.keys(JSON.parse(fs.readFileSync(out('am.json'), 'utf8')) as object)).toHaveLength(16);
    r = await exportCmd(profile, '--model', tiny, '--format', 'duo', '--out', out('duo.tsv'));
    expect(fs.readFileSync(out('duo.tsv'), 'utf8').trimEnd().split('\n').map((l) => l.split('\t').length)).toEqual([4, 4, 4, 4]);
    r = await exportCmd(profile, '--model', tiny, '--format', 'csv', '--out', out('v.csv'));
    expect(fs.readFileSync(out('v.csv'), 'utf8').split('\n')[0]).toBe('layer,kv_head,value,rank');
  });

  it('a model with sliding layers: rows are its full-attention layers, and the message says so', async () => {
    const p = path.join(dir, 'gemma-profile.json');
    fs.writeFileSync(p, JSON.stringify({ shape: [1, 2], scores: [[0.5, -0.1]] }));
    const r = await exportCmd(p, '--model', gemma, '--format', 'kvpress', '--out', path.join(dir, 'g.npy'), '--length', '64');
    expect(r.error).toBeUndefined();
    expect(decodeNpy(fs.readFileSync(path.join(dir, 'g.npy'))).shape).toEqual([99, 1, 2]);
    expect(r.stderr).toMatch(/1 full-attention layers of 6 \(layers 5; the 5 sliding-window layers are not budgeted, and kvpress's stock LUKVPress expects one row per model layer/);
    const csv = path.join(dir, 'g.csv');
    await exportCmd(p, '--model', gemma, '--format', 'csv', '--out', csv);
    expect(fs.readFileSync(csv, 'utf8')).toBe('layer,kv_head,value,rank\n5,0,0.5,1\n5,1,-0.1,2\n');
  });

  it('bad input: one CokvError line each, nothing written', async () => {
    const out = path.join(dir, 'bad.npy');
    const cases: [string[], RegExp][] = [
      [[profile, '--model', path.join(repoRoot, 'test/fixtures/models/llama3-tiny/llama3-tiny-f32.gguf'), '--format', 'kvpress', '--out', out],
        /^profile .*cokv-retrieval-tiny__loglik\.json: made for another model/],
      [[profile, '--model', tiny, '--format', 'npz', '--out', out], /^--format: 'npz' is not one of kvpress, attention-matching, duo, csv$/],
      [[profile, '--model', tiny, '--format', 'kvpress', '--out', path.join(dir, 'no/such/folder/t.npy')], /^--out .*t\.npy: folder .* does not exist$/],
      [[profile, '--model', tiny, '--format', 'kvpress', '--out', dir], /^--out .*: is a folder; cokv writes only regular files/],
      [[profile, '--model', tiny, '--format', 'csv', '--out', path.join(profile, 'v.csv')], /^--out .*loglik\.json\/v\.csv.*: a path component is not a folder \(ENOTDIR/],
      [[profile, '--model', tiny, '--format', 'csv', '--out', out, '--length', '64'], /^--length: applies to --format kvpress only/],
      [[profile, '--model', tiny, '--format', 'kvpress', '--out', out, '--length', '0'], /^--length: 0 is below the minimum 1$/],
      [[profile, '--model', tiny, '--format', 'kvpress', '--out', out, '--alpha', '1.5'], /^--alpha: '1\.5' is not an integer$/],
      [[path.join(dir, 'absent.json'), '--model', tiny, '--format', 'csv', '--out', out], /^profile .*absent\.json: cannot read the file$/],
      [[profile, '--model', path.join(dir, 'no-model'), '--format', 'csv', '--out', out], /no-model: no such file or folder$/],
    ];
    for (const [args, want] of cases) {
      const r = await exportCmd(...args);
      expect(r.error, args.join(' ')).toBeInstanceOf(CokvError);
      expect(r.error!.message).toMatch(want);
      expect(r.error!.message).not.toContain('\n');
      expect(fs.existsSync(out)).toBe(false);
    }
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('an existing --out is kept unless --force; --force replaces it atomically', async () => {
    const out = path.join(dir, 'existing.csv');
    fs.writeFileSync(out, 'keep me\n');
    const r = await exportCmd(profile, '--model', tiny, '--format', 'csv', '--out', out);
    expect(r.error?.message).toMatch(/^--out .*existing\.csv: already exists \(use --force to replace it\)$/);
    expect(fs.readFileSync(out, 'utf8')).toBe('keep me\n');
    const forced = await exportCmd(profile, '--model', tiny, '--format', 'csv', '--out', out, '--force');
    expect(forced.error).toBeUndefined();
    expect(fs.readFileSync(out, 'utf8').split('\n')).toHaveLength(18); // header + 16 heads + final newline
  });

  it.skipIf(process.getuid?.() === 0)('an unwritable folder: one line naming --out', async () => {
    const ro = path.join(dir, 'ro');
    fs.mkdirSync(ro, { mode: 0o555 });
    const r = await exportCmd(profile, '--model', tiny, '--format', 'csv', '--out', path.join(ro, 'v.csv'));
    expect(r.error?.message).toMatch(/^--out .*v\.csv.*permission denied/);
  });
});
