/**
 * Comma-separated list flags (issue #16 (b)): the one parser (src/cli/lists.ts) refuses every bad list with one
 * CokvError line naming the flag and the bad entry, and every command's list flags go through it — a bad list exits
 * 1 with that line before any model is read (the model paths below do not exist, so any later failure would name
 * the model instead).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { numberList, stringList } from '../src/cli/lists.js';
import { PRESS_NAMES } from '../src/press/registry.js';
import { GEN_TASKS } from '../src/eval/retrieval-gen.js';
import { cokvInProcess, expectCokvError, expectUserError, repoRoot, runAsync, tmpDir } from './helpers.js';

describe('numberList', () => {
  it('parses trimmed entries; an absent flag is undefined', () => {
    expect(numberList('--budgets', '64, 128 ,256', { integer: true, min: 1 })).toEqual([64, 128, 256]);
    expect(numberList('--ratios', '0.25,1', { min: 0, max: 1 })).toEqual([0.25, 1]);
    expect(numberList('--lengths', '512')).toEqual([512]);
    expect(numberList('--lengths', undefined)).toBeUndefined();
  });

  it('every bad list is one CokvError line naming the flag and the bad entry', () => {
    const cases: [string, Parameters<typeof numberList>[2], string][] = [
      ['', {}, "--x: '' is an empty list"],
      ['  ', {}, "--x: '  ' is an empty list"],
      ['512,,1024', { item: 'length' }, "--x: '512,,1024' must be a length or a comma-separated list of them (an entry is empty)"],
      ['512,', {}, "--x: '512,' must be a number or a comma-separated list of them (an entry is empty)"],
      [',512', {}, "--x: ',512' must be a number or a comma-separated list of them (an entry is empty)"],
      ['512, ,1024', {}, "--x: '512, ,1024' must be a number or a comma-separated list of them (an entry is empty)"],
      ['512,abc', {}, "--x: 'abc' is not a number"],
      ['NaN', {}, "--x: 'NaN' is not a number"],
      ['64,Infinity', {}, "--x: 'Infinity' is not a number"],
      ['64,1.5', { integer: true }, "--x: '1.5' is not an integer"],
      ['9007199254740993', { integer: true }, "--x: '9007199254740993' is not a safe integer (|n| < 2^53)"],
      ['64,0', { integer: true, min: 1 }, '--x: 0 is below the minimum 1'],
      ['0.5,1.5', { min: 0, max: 1 }, '--x: 1.5 is above the maximum 1'],
    ];
    for (const [value, opts, message] of cases) {
      const e = expectCokvError(() => numberList('--x', value, opts));
      expect(e.message, JSON.stringify(value)).toBe(message);
      expect(e.kind).toBe('flag');
    }
  });

  it('a value with control characters still gives one line', () => {
    const e = expectCokvError(() => numberList('--x', '1,\n'), '--x: ', 'an entry is empty');
    expect(e.message).toContain('\\x0a');
  });
});

describe('stringList', () => {
  it('parses trimmed entries; `allowed` limits them', () => {
    expect(stringList('--presses', ' full , snapkv', { allowed: PRESS_NAMES })).toEqual(['full', 'snapkv']);
    expect(stringList('--subset', 'passkey,kv')).toEqual(['passkey', 'kv']);
    expect(stringList('--subset', undefined)).toBeUndefined();
  });

  it('every bad list is one CokvError line naming the flag and the bad entry', () => {
    const cases: [string, Parameters<typeof stringList>[2], string][] = [
      ['', {}, "--x: '' is an empty list"],
      ['a,,b', { item: 'file' }, "--x: 'a,,b' must be a file or a comma-separated list of them (an entry is empty)"],
      ['a,', {}, "--x: 'a,' must be a value or a comma-separated list of them (an entry is empty)"],
      ['passkey,twohop', { allowed: GEN_TASKS }, "--x: 'twohop' must be one of passkey, multikey, kv"],
      ['full,Full', { allowed: PRESS_NAMES }, `--x: 'Full' must be one of ${PRESS_NAMES.join(', ')}`],
    ];
    for (const [value, opts, message] of cases) {
      const e = expectCokvError(() => stringList('--x', value, opts));
      expect(e.message, JSON.stringify(value)).toBe(message);
      expect(e.kind).toBe('flag');
    }
  });
});

describe('every command parses its list flags with it, before the model is read', () => {
  const dir = tmpDir('cokv-cli-lists-');
  const noModel = `${dir}/no-such-model`;
  const evalArgs = ['eval', '--model', noModel, '--data', `${dir}/no-data.jsonl`, '--dataset', 'retrieval', '--out', `${dir}/eval`];
  const profileArgs = ['profile', '--model', noModel, '--data', `${dir}/no-data.jsonl`, '--out', `${dir}/p.json`];
  const needleArgs = ['needle', '--model', noModel, '--haystack', `${dir}/no-haystack`, '--out', `${dir}/needle`];
  const cases: [string, string[], string][] = [
    ['eval --budgets', [...evalArgs, '--budgets', ''], "--budgets: '' is an empty list"],
    ['eval --presses', [...evalArgs, '--presses', 'full,snapkvv'], `--presses: 'snapkvv' must be one of ${PRESS_NAMES.join(', ')}`],
    ['eval --ratios', [...evalArgs, '--ratios', '0.5,2'], '--ratios: 2 is above the maximum 1'],
    ['eval --lengths', [...evalArgs, '--lengths', '512,,abc'], "--lengths: '512,,abc' must be a length or a comma-separated list of them (an entry is empty)"],
    ['eval --subset', [...evalArgs, '--subset', 'passkey,'], "--subset: 'passkey,' must be a sub-task or a comma-separated list of them (an entry is empty)"],
    ['bench --lengths', ['bench', '--model', noModel, '--lengths', '512,abc'], "--lengths: 'abc' is not a number"],
    ['bench --presses', ['bench', '--model', noModel, '--presses', ''], "--presses: '' is an empty list"],
    ['needle --budgets', [...needleArgs, '--budgets', '64,0'], '--budgets: 0 is below the minimum 1'],
    ['needle --presses', [...needleArgs, '--presses', 'full,magic'], `--presses: 'magic' must be one of ${PRESS_NAMES.join(', ')}`],
    ['profile --lengths', [...profileArgs, '--lengths', '512,1.5'], "--lengths: '1.5' is not an integer"],
    ['profile --sizes', [...profileArgs, '--sizes', '2,,4'], "--sizes: '2,,4' must be a size or a comma-separated list of them (an entry is empty)"],
    ['profile --subset', [...profileArgs, '--subset', ' '], "--subset: ' ' is an empty list"],
    ['gen-retrieval --tasks', ['gen-retrieval', '--model', noModel, '--out', `${dir}/g.jsonl`, '--tasks', 'passkey,,kv'], "--tasks: 'passkey,,kv' must be a task or a comma-separated list of them (an entry is empty)"],
    ['report --profile', ['report', `${dir}/no-results`, '--profile', 'a.json,'], "--profile: 'a.json,' must be a file or a comma-separated list of them (an entry is empty)"],
    ['head-scores --length', ['head-scores', '--model', noModel, '--haystack', `${dir}/no-haystack`, '--out', `${dir}/h.json`, '--length', '512,x'], "--length: 'x' is not a number"],
  ];
  const line = (message: string) => new RegExp(`^cokv: ${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n$`);

  it.each(cases)('%s', async (_name, args, message) => {
    expectUserError(await cokvInProcess(...args), line(message));
  });

  it('as a process: exit status 1 and the one line, for one list of each command', async () => {
    const firstOfEach = cases.filter(([name], i) => cases.findIndex(([other]) => other.split(' ')[0] === name.split(' ')[0]) === i);
    expect(firstOfEach.map(([name]) => name.split(' ')[0])).toEqual(['eval', 'bench', 'needle', 'profile', 'gen-retrieval', 'report', 'head-scores']);
    const runs = await Promise.all(firstOfEach.map(([, args]) => runAsync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/run.ts'), ...args], { timeoutMs: 60_000 })));
    runs.forEach((r, i) => expectUserError(r, line(firstOfEach[i][2])));
  });
});
