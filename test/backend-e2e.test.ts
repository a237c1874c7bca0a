/**
 * End to end: the retrieval-tiny model (../shared/assets) gives the same greedy 16 tokens on every backend as on
 * the TS reference, for each reference prompt, for the F32 safetensors folder and the Q8_0 GGUF.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine.js';
import { TsBackend } from '../src/backend/ts.js';
import type { Backend } from '../src/backend/types.js';
import { NativeBackend, loadNativeAddon, nativeLoadError } from '../src/backend/native.js';
import { WasmBackend } from '../src/backend/wasm.js';
import { asset, haveAssets } from './helpers.js';

const dir = asset('models/cokv-retrieval-tiny');
const present = haveAssets && fs.existsSync(dir);
const addon = loadNativeAddon();
if (!addon) console.warn(`[backend e2e] native addon unavailable, native cases skipped: ${nativeLoadError()}`);

interface Ref { input_ids: number[]; greedy_16_ids: number[] }
const refs: Ref[] = present
  ? fs.readdirSync(`${dir}/reference`).filter((f) => /^prompt\d+\.json$/.test(f)).sort()
    .map((f) => JSON.parse(fs.readFileSync(`${dir}/reference/${f}`, 'utf8')) as Ref)
  : [];

async function greedy(modelPath: string, backend: Backend): Promise<number[][]> {
  const m = await loadModel(modelPath, { backend });
  const outs: number[][] = [];
  for (const r of refs) {
    const g = m.generate(r.input_ids, { maxTokens: 16, temperature: 0, eosIds: [] });
    await g.complete();
    outs.push(g.tokens);
  }
  return outs;
}

const cases: [string, () => Backend][] = [['wasm', () => new WasmBackend()]];
if (addon) cases.push(['native', () => new NativeBackend(addon, { int8Activations: false })]);


describe.skipIf(!present)('backends end to end on cokv-retrieval-tiny', () => {
  for (const [variant, file] of [['HF F32', ''], ['GGUF Q8_0', '/cokv-retrieval-tiny-q8_0.gguf']] as const) {
    it(`${variant}: greedy 16 tokens equal the TS backend's on every reference prompt`, async () => {
      const want = await greedy(dir + file, new TsBackend());
      if (variant === 'HF F32') expect(want).toEqual(refs.map((r) => r.greedy_16_ids));
      for (const [name, make] of cases) {
        expect(await greedy(dir + file, make()), `${name} ${variant}`).toEqual(want);
      }
      if (addon && variant === 'GGUF Q8_0') {
        // The default native backend quantizes activations to q8_0 for the integer dots (as llama.cpp does), so it is
        // not bit-comparable with the f32 path above. On this trained model its 16 greedy tokens are the F32
        // model's own (transformers' reference): prompt 1 has a near-tie at token 6 ("…23 27 28" vs "…23 27 27")
        // that exact f32 on the Q8_0 weights resolves the other way, and int8 activations resolve as F32 does.
        const int8 = await greedy(dir + file, new NativeBackend(addon, { int8Activations: true }));
        expect(int8, 'native int8 GGUF Q8_0').toEqual(refs.map((r) => r.greedy_16_ids));
      }
    });
  }
  it.skipIf(!addon)('native addon present (otherwise this case is skipped: run `npm run build:native`)', () => {
    expect(addon!.info().threads).toBeGreaterThan(0);
  });
});
