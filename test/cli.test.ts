import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { asset, haveAssets, repoRoot, tmpDir, cokv, expectUserError } from './helpers.js';

/** Run the CLI from source, like `npx cokv …` after a build. */
const stories = asset('models/stories260K');
const tiny = asset('models/cokv-retrieval-tiny');

describe('cokv --version', () => {
  it('prints package.json\'s version and exits 0', () => {
    const want = (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) {
      const r = cokv(flag);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(want);
    }
  });
});

describe.skipIf(!haveAssets)('cokv CLI', () => {
  it('generate on stories260K prints the known greedy continuation, summary on stderr', () => {
    const r = cokv('generate', '--model', stories, '--prompt', 'Once upon a time', '--max-tokens', '40', '--temperature', '0');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.\n');
    expect(r.stderr).toMatch(/prompt 5 tok \| generated 40 tok .*prefill .* ms .*decode .* tok\/s .*KV .* peak RSS .* \| backend (native|wasm|ts)$/m);
  });

  it('generate --json gives text, tokens and stats; a press shrinks the KV bytes', () => {
    const r = cokv('generate', '--model', stories, '--prompt', 'Once upon a time there was a dog named Max who liked to run in the big green park every day', '--max-tokens', '5', '--json', '--press', 'snapkv', '--budget', '12');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.tokens).toHaveLength(5);
    expect(out.stats.promptTokens).toBeGreaterThan(12);
    expect(out.stats.kvBytes).toBeLessThan(out.stats.kvFullBytes);
  });

  it('--kv-dtype q8 holds 2·(hd + 4) bytes per entry and head (stories260K: 480 per token vs 1280 in F32)', () => {
    const args = ['generate', '--model', stories, '--prompt', 'Once upon a time', '--max-tokens', '8', '--temperature', '0', '--json'];
    const a = cokv(...args, '--kv-dtype', 'f32'), b = cokv(...args, '--kv-dtype', 'q8');
    expect(b.code, b.stderr).toBe(0);
    const sa = JSON.parse(a.stdout).stats, sb = JSON.parse(b.stdout).stats;
    // 5 layers × 4 KV heads × 2 × (8 + 4) bytes per token.
    expect(sb.promptKvBytes).toBe(sb.promptTokens * 480);
    expect(sb.kvBytes * 1280).toBe(sa.kvBytes * 480);
  });

  it('--stop ends the text before the stop string', () => {
    const r = cokv('generate', '--model', stories, '--prompt', 'Once upon a time', '--max-tokens', '40', '--stop', 'Lily');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(', there was a little girl named \n');
    expect(r.stderr).toMatch(/\(stop\)/);
  });

  it('sampling with a seed is reproducible', () => {
    const a = cokv('generate', '--model', stories, '--prompt', 'Once', '--max-tokens', '20', '--temperature', '0.9', '--top-p', '0.9', '--seed', '5');
    const b = cokv('generate', '--model', stories, '--prompt', 'Once', '--max-tokens', '20', '--temperature', '0.9', '--top-p', '0.9', '--seed', '5');
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
  });

  it('inspect shows dims, dtypes and players; --json is machine-readable', () => {
    const r = cokv('inspect', `${tiny}/cokv-retrieval-tiny-q8_0.gguf`, '--json');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info).toMatchObject({ format: 'gguf', architecture: 'llama', layers: 4, heads: 8, kvHeads: 4, headDim: 32, vocabSize: 2048 });
    expect(info.players.total).toBe(16);
    expect(info.dtypes.q8_0).toBeGreaterThan(0);
    const t = cokv('inspect', stories);
    expect(t.stdout).toMatch(/players\s+5 layers × 4 KV heads = 20/);
    expect(t.stdout).toMatch(/format\s+llama2c/);
  });

  it('--help works on every command', () => {
    for (const args of [['--help'], ['generate', '--help'], ['inspect', '--help']]) {
      const r = cokv(...args);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/Usage: cokv/);
    }
  });

  describe('bad input: one line, exit 1, no stack trace', () => {
    const dir = tmpDir();
    const empty = path.join(dir, 'empty.txt');
    fs.writeFileSync(empty, '');
    const cases: [string, string[], RegExp][] = [
      ['missing model', ['generate', '--model', path.join(dir, 'nope.gguf'), '--prompt', 'x'], /nope\.gguf: no such file/],
      ['empty prompt', ['generate', '--model', stories, '--prompt', ''], /--prompt: the prompt is empty/],
      ['empty prompt file', ['generate', '--model', stories, '--prompt-file', empty], /--prompt-file: the prompt is empty/],
      ['missing prompt file', ['generate', '--model', stories, '--prompt-file', path.join(dir, 'none.txt')], /--prompt-file: cannot read/],
      ['no prompt', ['generate', '--model', stories], /exactly one of them/],
      ['prompt longer than the context', ['generate', '--model', stories, '--prompt', 'Once upon a time '.repeat(200)], /do not fit the model's context of 512 tokens/],
      ['bad number', ['generate', '--model', stories, '--prompt', 'x', '--max-tokens', 'many'], /--max-tokens: 'many' is not a number/],
      ['negative temperature', ['generate', '--model', stories, '--prompt', 'x', '--temperature', '-1'], /--temperature: -1 is below/],
      ['unknown press', ['generate', '--model', stories, '--prompt', 'x', '--press', 'magic', '--budget', '16'], /--press: unknown press 'magic'/],
      ['ratio out of range', ['generate', '--model', stories, '--prompt', 'x', '--press', 'snapkv', '--ratio', '1.5'], /--ratio: 1.5 must be in \(0, 1\]/],
      ['chat without template', ['generate', '--model', stories, '--prompt', 'x', '--chat'], /no chat template/],
      ['bad KV storage type', ['generate', '--model', stories, '--prompt', 'x', '--kv-dtype', 'int4'], /^cokv: --kv-dtype: 'int4' must be f32, f16 or q8$/m],
      ['inspect of a text file', ['inspect', empty], /empty\.txt: /],
    ];
    for (const [name, args, re] of cases) {
      it(name, () => {
        expectUserError(cokv(...args), re);
      });
    }
    it('unknown option exits 1', () => {
      expect(cokv('generate', '--model', stories, '--prompt', 'x', '--frobnicate').code).toBe(1);
    });
  });
});
