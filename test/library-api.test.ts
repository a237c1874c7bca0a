/**
 * The library API's contract (issue 17's "Why"): stats after breaking out of a stream, createPress typed as Press,
 * model.dispose(), and library errors worded as option names (the CLI and the server write them as their own).
 */
import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { loadModel, type CokvModel } from '../src/engine.js';
import { CokvError } from '../src/errors.js';
import { createPress, FullPress, isFullPress, resolvePress } from '../src/press/registry.js';
import { validatePressOptions } from '../src/press/options.js';
import type { Press } from '../src/press/types.js';
import { flagWording } from '../src/cli/flag-names.js';
import { asset, cokv, expectUserError, haveAssets } from './helpers.js';

const stories = asset('models/stories260K');

function thrown(fn: () => unknown): CokvError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CokvError);
    return e as CokvError;
  }
  throw new Error('expected a CokvError');
}

async function rejected(p: Promise<unknown>): Promise<CokvError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(CokvError);
  return e as CokvError;
}

describe.skipIf(!haveAssets)('library API', () => {
  let model: CokvModel;
  beforeAll(async () => {
    model = await loadModel(stories);
  });

  describe('Generation.stats', () => {
    it('is defined after breaking out of the stream (stopReason cancelled, counts of what ran)', async () => {
      const gen = model.generate('Once upon a time', { maxTokens: 30, temperature: 0 });
      let n = 0;
      for await (const _ of gen) if (++n === 3) break;
      const s = gen.stats;
      expect(s).toBeDefined();
      expect(s!.stopReason).toBe('cancelled');
      expect(s!.generatedTokens).toBe(3);
      expect(gen.tokens).toHaveLength(3);
      expect(s!.promptTokens).toBe(model.promptIds('Once upon a time').length);
      expect(s!.promptKvBytes).toBeGreaterThan(0);
      expect(s!.promptKvBytes).toBe(s!.promptFullKvBytes);
      // Two of the three tokens were run through the model (the third is never fed).
      expect(s!.kvBytes).toBe((s!.promptKvBytes / s!.promptTokens) * (s!.promptTokens + 2));
    });

    it('is defined after breaking out of a Sequence\'s own generate too', async () => {
      const seq = await model.createSequence();
      await seq.prefill('Once upon a time');
      const gen = seq.generate({ maxTokens: 30, temperature: 0 });
      let n = 0;
      for await (const _ of gen) if (++n === 2) break;
      expect(gen.stats?.stopReason).toBe('cancelled');
      expect(gen.stats?.generatedTokens).toBe(2);
      seq.dispose();
    });

    it('is defined after the signal cancels the decode, and a run to the end still says why it ended', async () => {
      const ac = new AbortController();
      const gen = model.generate('Once upon a time', { maxTokens: 30, temperature: 0, signal: ac.signal });
      const err = await (async () => {
        for await (const _ of gen) ac.abort();
      })().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(CokvError);
      expect((err as CokvError).kind).toBe('aborted');
      expect(gen.stats?.stopReason).toBe('cancelled');
      expect(gen.stats?.generatedTokens).toBe(1);

      const whole = model.generate('Once upon a time', { maxTokens: 5, temperature: 0 });
      await whole.complete();
      expect(whole.stats?.stopReason).toBe('length');
      expect(whole.stats?.generatedTokens).toBe(5);
    });
  });

  describe('createPress', () => {
    it('returns Press for every name (a compile-time assignment); full is a FullPress the engine treats as none', async () => {
      const p: Press = createPress('snapkv', { budget: 16 }, model.config);
      const full: Press = createPress('full', {}, model.config);
      expectTypeOf(createPress).returns.toEqualTypeOf<Press>();
      expectTypeOf(resolvePress).returns.toEqualTypeOf<Press | undefined>();
      expect(p.name).toBe('snapkv');
      expect(full).toBeInstanceOf(FullPress);
      expect(isFullPress(full)).toBe(true);
      expect(isFullPress(p)).toBe(false);
      expect(resolvePress('full', {}, model.config)).toBeUndefined();
      expect(resolvePress('snapkv', { budget: 16 }, model.config)?.name).toBe('snapkv');
      const prompt = 'Once upon a time there was a dog named Max who liked to run in the big green park every day';
      const a = model.generate(prompt, { maxTokens: 12, temperature: 0, press: full });
      const b = model.generate(prompt, { maxTokens: 12, temperature: 0 });
      await a.complete();
      await b.complete();
      expect(a.tokens).toEqual(b.tokens);
      expect(a.stats!.promptKvBytes).toBe(b.stats!.promptKvBytes);
    });

    it('an unknown name is a CokvError naming the press option and the known names', () => {
      const e = thrown(() => createPress('snapkvv', { budget: 16 }, model.config));
      expect(e.kind).toBe('flag');
      expect(e.message).toMatch(/^press: unknown press 'snapkvv' \(known: full, .*snapkv/);
    });
  });

  describe('error wording', () => {
    it('library press errors start with the option name, never a CLI flag', () => {
      const cases: [() => unknown, string][] = [
        [() => createPress('snapkv', {}, model.config), "budget/ratio: press 'snapkv' needs a budget or a ratio"],
        [() => createPress('snapkv', { budget: 16, ratio: 0.5 }, model.config), 'budget/ratio: give one, not both'],
        [() => validatePressOptions({ budget: 4 }), 'budget: 4 must be larger than the window (8)'],
        [() => validatePressOptions({ ratio: 2 }), 'ratio: 2 must be in (0, 1]'],
        [() => validatePressOptions({ kernel: 4 }), 'kernel: 4 must be a positive odd integer'],
        [() => validatePressOptions({ headkvBeta: 1 }), 'headkvBeta: 1 must be > 1'],
        [() => createPress('cokv', { budget: 16 }, model.config), 'profile: press cokv needs a profile file'],
        [() => createPress('headkv', { budget: 16 }, model.config), 'headScores: press headkv needs a head scores file'],
        [() => createPress('cokv', { budget: 16, profile: '/nonexistent/p.json' }, model.config), 'profile /nonexistent/p.json: cannot read the file'],
      ];
      for (const [fn, start] of cases) {
        const e = thrown(fn);
        expect(e.message.startsWith(start), e.message).toBe(true);
        expect(e.message).not.toContain('--');
      }
    });

    it('loadModel names the backend option', async () => {
      const e = await rejected(loadModel(stories, { backend: 'gpu' as 'ts' }));
      expect(e.message).toMatch(/^backend: 'gpu' must be one of auto, /);
    });

    it('the CLI writes a leading option name as its flag and leaves other messages alone', () => {
      expect(flagWording("budget/ratio: press 'snapkv' needs a budget or a ratio")).toBe("--budget/--ratio: press 'snapkv' needs a budget or a ratio");
      expect(flagWording('headScores: press headkv needs a head scores file')).toBe('--head-scores: press headkv needs a head scores file');
      expect(flagWording('maxTokens: 9999 is more than the context')).toBe('--max-tokens: 9999 is more than the context');
      expect(flagWording('profile p.json: cannot read the file')).toBe('--profile p.json: cannot read the file');
      expect(flagWording('headScores h.json: not valid JSON')).toBe('--head-scores h.json: not valid JSON');
      expect(flagWording('prompt: the prompt is empty')).toBe('prompt: the prompt is empty');
      expect(flagWording('press the button')).toBe('press the button');
      expect(flagWording("backend: 'gpu' must be one of auto, native, wasm, ts")).toBe("--backend: 'gpu' must be one of auto, native, wasm, ts");
      expect(flagWording('budget/nonsense: x')).toBe('budget/nonsense: x');
      expect(flagWording('no option here')).toBe('no option here');
    });

    it('cokv generate names the flags', () => {
      expectUserError(cokv('generate', '--model', stories, '--prompt', 'x', '--press', 'snapkv'), /^cokv: --budget\/--ratio: press 'snapkv' needs a budget or a ratio$/m);
      expectUserError(cokv('generate', '--model', stories, '--prompt', 'x', '--press', 'snapkv', '--budget', '4'), /^cokv: --budget: 4 must be larger than the window \(8\)$/m);
      expectUserError(cokv('generate', '--model', stories, '--prompt', 'x', '--press', 'cokv', '--budget', '16', '--profile', '/nonexistent/p.json'), /^cokv: --profile \/nonexistent\/p\.json: cannot read the file$/m);
    });
  });

  describe('model.dispose()', () => {
    it('releases the model: every later call that runs it refuses with a clear error; encode still works', async () => {
      const m = await loadModel(stories);
      const seq = await m.createSequence();
      await seq.prefill('Once upon a time');
      expect(m.disposed).toBe(false);
      m.dispose();
      m.dispose(); // idempotent
      expect(m.disposed).toBe(true);
      const check = (e: CokvError): void => {
        expect(e.kind).toBe('state');
        expect(e.message).toMatch(/^model: it was disposed/);
      };
      check(thrown(() => m.generate('Once', { maxTokens: 2 })));
      check(thrown(() => m.transformer));
      check(thrown(() => m.newCache()));
      check(thrown(() => m.prefillShared(m.promptIds('Once'))));
      check(await rejected(m.createSequence()));
      // A sequence made before: its next pass refuses too.
      check(await rejected(seq.append(m.encode(' there', false))));
      expect(m.encode('Once', false).length).toBeGreaterThan(0);
      // Other models are unaffected.
      expect(await model.generate('Once', { maxTokens: 3, temperature: 0 }).complete()).not.toBe('');
    });
  });
});
