/**
 * The results pipeline (issue #8): every experiment is one seeded, resumable step that writes under `results/`.
 * Profiles and head scores are computed on validation items only; every score comes from test items.
 *
 *   profiles     CoKV profiles (Sliced Shapley, loglik utility, 2 runs) and HeadKV retrieval-head scores
 *   budget       score vs budget for all presses, both protocols (question-aware, context-only), and ratios
 *   generated    the same sweep on fresh retrieval items generated in the dev file's format (`cokv gen-retrieval`,
 *                held-out haystacks, seed + 1): more test items per cell than the dev file's 17
 *   baselines    per-head presses under the references' allocation rules, and the CoKV / HeadKV allocator variants
 *   masking      keep the full cache only for the k highest- vs k lowest-valued heads
 *   estimator    convergence of two runs, exact Shapley by enumeration (16 players), cost vs the naive loop
 *   sensitivity  α, window and utility choice
 *   quant        CoKV and SnapKV with F16 and Q8 KV storage at the same bytes as F32
 *   memory       KV bytes, prefill and decode latency, peak RSS on a random SmolLM2-135M-shaped model, 1k–8k tokens
 *   summary      results/summary.json + results/results.md + figures (SVG) + results/report.html, all from one read of the runs
 *
 * Each sub-step is a library call made with the options of the equivalent `cokv` command (commands.ts); the
 * summary step is summary.ts; the names, plans and paths are plan.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { equalBytesLength } from '../cache/ragged.js';
import { loadModel, type CokvModel } from '../engine.js';
import { CokvError } from '../errors.js';
import { datasetInfo, loadEvalItems, splitItems } from '../eval/datasets.js';
import type { GenTask } from '../eval/retrieval-gen.js';
import { compareValues, topK } from '../game/compare.js';
import { enumerateGame } from '../game/enumerate.js';
import { ModelGame, type UtilityKind } from '../game/model-game.js';
import { readProfile } from '../game/profile-file.js';
import { buildSamples, metricGameOptions } from '../game/samples.js';
import { defaultSizes, mixSeed } from '../game/sliced-shapley.js';
import { Rng } from '../generate/rng.js';
import { SWEEP_PRESS_NAMES, pressesReading } from '../press/presses/index.js';
import { writeSafetensors } from '../model/loaders/safetensors.js';
import { openModel } from '../model/load.js';
import { ProgressBar, formatDuration } from '../util/progress.js';
import { writeFileAtomic } from '../util/files.js';
import { benchStep, evalStep, genRetrievalStep, headScoresStep, profileStep, type EvalStep, type PressTuning } from './commands.js';
import { EXPERIMENTS, PRESSES, TASKS, defaultProfile, headScoresFile, paths, plan, profileFile, type ExperimentName, type ExperimentOptions } from './plan.js';
import { summary } from './summary.js';

export { EXPERIMENTS, type ExperimentName, type ExperimentOptions };

async function profiles(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  fs.mkdirSync(p.profiles, { recursive: true });
  const common = { split: 'validation', runs: 2, seed: o.seed, samples: pl.profileSamples } as const;
  const tinyData = { model: p.tiny, data: p.retrievalData, task: 'retrieval', subset: TASKS, lengths: o.quick ? [512] : undefined };
  // The retrieval model: the default (metric) profile, the loglik one (the earlier default, a baseline), and the
  // leave-one-out values under the same utility (single-head ablation: a baseline allocator).
  for (const utility of ['metric', 'loglik'] as const) {
    const f = profileFile(o, 'cokv-retrieval-tiny', utility);
    if (!fs.existsSync(f) || !readProfile(f).converged) {
      await profileStep({ ...tinyData, utility, ...common, limit: pl.profileLimit, out: f, resume: fs.existsSync(f) }, o);
    }
  }
  const loo = profileFile(o, 'cokv-retrieval-tiny', 'metric', '-loo');
  if (!fs.existsSync(loo)) await profileStep({ ...tinyData, utility: 'metric', estimator: 'loo', split: 'validation', limit: pl.profileLimit, out: loo }, o);
  const storiesProfile = profileFile(o, 'stories260K');
  if (!fs.existsSync(storiesProfile) || !readProfile(storiesProfile).converged) {
    await profileStep({ model: p.stories, data: p.storiesData, task: 'stories', utility: 'loglik', maxNew: 16,
      ...common, limit: o.quick ? 4 : undefined, out: storiesProfile, resume: fs.existsSync(storiesProfile) }, o);
  }
  for (const [name, model, len] of [['cokv-retrieval-tiny', p.tiny, 512], ['stories260K', p.stories, 256]] as const) {
    const f = headScoresFile(o, name, 'copy');
    if (!fs.existsSync(f)) {
      // `--method copy`: the needle-copy score these experiments were first published with.
      await headScoresStep({ method: 'copy', model, haystack: p.haystack, lengths: [len], samples: o.quick ? 2 : 8, seed: o.seed, out: f }, o);
    }
  }
  // HeadKV-R2 (the default head score) and the two single-head statistics the baselines step compares.
  for (const method of ['r2', 'output-norm', 'entropy'] as const) {
    const f = headScoresFile(o, 'cokv-retrieval-tiny', method);
    if (!fs.existsSync(f)) {
      await headScoresStep({ method, model: p.tiny, haystack: p.haystack, samples: o.quick ? 2 : 8, lengths: o.quick ? [512] : undefined, seed: o.seed, out: f }, o);
    }
  }
}

/** The head values and head scores each model's CoKV and HeadKV presses use. */
function pressFlags(o: ExperimentOptions, model: string): PressTuning {
  return { profile: defaultProfile(o, model), headScores: headScoresFile(o, model) };
}

const PROTOCOLS = ['question-aware', 'context-only'] as const;

async function budget(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  for (const task of TASKS) {
    for (const L of pl.lengths) {
      for (const protocol of PROTOCOLS) {
        await evalStep({ model: p.tiny, data: p.retrievalData, dataset: 'retrieval', subset: [task], lengths: [L],
          split: 'test', splitSeed: o.seed, limit: pl.testLimit, presses: PRESSES, budgets: pl.budgets,
          ratios: pl.ratios, protocol, ...pressFlags(o, 'cokv-retrieval-tiny'),
          out: path.join(p.runs, `retrieval-${task}-${L}`) }, o);
      }
    }
  }
  if (!o.quick) {
    for (const task of ['vartrack', 'twohop']) {
      await evalStep({ model: p.tiny, data: p.retrievalData, dataset: 'retrieval', subset: [task], lengths: [512],
        split: 'test', splitSeed: o.seed, presses: ['full', 'snapkv', 'cokv'], budgets: [64], ...pressFlags(o, 'cokv-retrieval-tiny'),
        out: path.join(p.runs, `retrieval-${task}-512`) }, o);
    }
  }
  await evalStep({ model: p.stories, data: p.storiesData, dataset: 'stories', split: 'test', splitSeed: o.seed,
    limit: pl.storiesLimit, presses: PRESSES, budgets: o.slice ? [16, 1024] : o.quick ? [16, 32] : [16, 24, 32, 64],
    metric: 'loglik', ...pressFlags(o, 'stories260K'), out: path.join(p.runs, 'stories') }, o);
}

/** Items per task × length of the `generated` step (full mode). */
const GENERATED_PER_CELL = 60;

/**
 * The budget sweep on generated retrieval items (passkey, multikey, kv): the profiler never saw them (it reads the
 * dev file's validation split), and there are more of them per cell than the dev file's test split holds.
 */
async function generated(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  const data = path.join(o.out, 'data', 'retrieval-generated.jsonl');
  const count = o.slice ? 1 : o.quick ? 4 : GENERATED_PER_CELL;
  if (!fs.existsSync(data)) {
    fs.mkdirSync(path.dirname(data), { recursive: true });
    await genRetrievalStep({ model: p.tiny, tasks: TASKS as GenTask[], lengths: pl.lengths, count,
      seed: o.seed + 1, dataDir: path.join(o.assets, 'data'), out: data }, o);
  }
  for (const task of TASKS) {
    for (const L of pl.lengths) {
      for (const protocol of PROTOCOLS) {
        await evalStep({ model: p.tiny, data, dataset: 'retrieval', subset: [task], lengths: [L], split: 'all',
          presses: PRESSES, budgets: pl.budgets, ratios: pl.ratios,
          protocol, ...pressFlags(o, 'cokv-retrieval-tiny'), out: path.join(p.runs, 'generated', `retrieval-${task}-${L}`) }, o);
      }
    }
  }
}

/**
 * Baselines and allocation rules (issue #19), on the generated items: every per-head press under the references'
 * integer rules without re-sharing (`--no-redistribute`: the HeadKV/CoKV/AdaKV code) beside cokv's default
 * re-sharing (the `generated` step's runs), and the allocator variants (the profiler ablation) under the default
 * rule on the 512- and 1024-token cells — CoKV with the loglik profile (the earlier default) and with leave-one-out
 * values, HeadKV with the needle-copy, output-norm and attention-entropy scores. Uniform presses (SnapKV,
 * boundary-protected SnapKV, StreamingLLM) give every head the same budget, so the rule does not change them; their
 * runs are the `generated` step's.
 */
/** The presses whose allocation reads `redistribute` (the per-head ones), in sweep order. */
const PER_HEAD_PRESSES = SWEEP_PRESS_NAMES.filter((p) => pressesReading('redistribute').some((d) => d.name === p));

function baselineVariants(o: ExperimentOptions): { name: string; presses: string[]; tuning: PressTuning }[] {
  const tiny = 'cokv-retrieval-tiny';
  return [
    { name: 'default', presses: PER_HEAD_PRESSES, tuning: pressFlags(o, tiny) },
    { name: 'cokv-loglik', presses: ['cokv'], tuning: { profile: profileFile(o, tiny, 'loglik') } },
    { name: 'cokv-loo', presses: ['cokv'], tuning: { profile: profileFile(o, tiny, 'metric', '-loo') } },
    { name: 'headkv-copy', presses: ['headkv'], tuning: { headScores: headScoresFile(o, tiny, 'copy') } },
    { name: 'headkv-output-norm', presses: ['headkv'], tuning: { headScores: headScoresFile(o, tiny, 'output-norm') } },
    { name: 'headkv-entropy', presses: ['headkv'], tuning: { headScores: headScoresFile(o, tiny, 'entropy') } },
  ];
}

async function baselines(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  const data = path.join(o.out, 'data', 'retrieval-generated.jsonl');
  if (!fs.existsSync(data)) throw new CokvError(`experiment baselines: ${data} is missing (run the generated step first)`, 'file');
  for (const rule of ['reshare', 'reference'] as const) {
    for (const v of baselineVariants(o)) {
      // The default variant under re-sharing is the generated step's own runs; the allocator variants (the
      // ablation) run under the default rule, on the 512- and 1024-token cells (the 2-core VM's time).
      if (rule === 'reshare' && v.name === 'default') continue;
      if (rule === 'reference' && v.name !== 'default') continue;
      const lengths = v.name === 'default' ? pl.lengths : pl.lengths.filter((L) => L <= 1024);
      for (const task of TASKS) {
        for (const L of lengths) {
          for (const protocol of PROTOCOLS) {
            await evalStep({ model: p.tiny, data, dataset: 'retrieval', subset: [task], lengths: [L], split: 'all',
              presses: v.presses, budgets: pl.budgets, protocol, ...v.tuning,
              ...(rule === 'reference' ? { redistribute: false } : {}),
              out: path.join(p.runs, 'baselines', rule, v.name, `retrieval-${task}-${L}`) }, o);
          }
        }
      }
    }
  }
}

/** Keep the full cache only for the k highest (or lowest) valued heads; every other head keeps the window. */
async function masking(o: ExperimentOptions): Promise<void> {
  const p = paths(o);
  const out = path.join(o.out, 'masking');
  fs.mkdirSync(out, { recursive: true });
  for (const [name, modelPath, dataset, dataPath] of [
    ['cokv-retrieval-tiny', p.tiny, 'retrieval', p.retrievalData], ['stories260K', p.stories, 'stories', p.storiesData],
  ] as const) {
    const file = path.join(out, `${name}.json`);
    if (fs.existsSync(file)) continue;
    const model = await loadModel(modelPath);
    const c = model.config;
    const n = c.numLayers * c.numKvHeads;
    const values = readProfile(defaultProfile(o, name)).values.flat();
    let items = loadEvalItems(dataset, dataPath);
    if (dataset === 'retrieval') items = items.filter((it) => TASKS.includes(it.task ?? '') && it.length === 512);
    items = splitItems(items, o.seed).test.slice(0, o.slice ? 1 : o.quick ? 6 : dataset === 'retrieval' ? 60 : 40);
    const ks = [...new Set([1, 2, Math.round(n / 8), Math.round(n / 4), Math.round(n / 2), Math.round((3 * n) / 4)])].filter((k) => k >= 1 && k < n).sort((a, b) => a - b);
    const score = await maskedScorer(model, dataset, items);
    const rows: { k: number; top: number; bottom: number; random: number }[] = [];
    const bar = new ProgressBar(`masking ${name}`, o.quiet);
    const total = 3 * ks.length + 2;
    for (const k of ks) {
      bar.update(3 * rows.length, total, `k=${k}`);
      const top = topK(values, k), bottom = topK(values.map((v) => -v), k);
      const rng = new Rng(mixSeed(o.seed, k));
      const rnd = topK(values.map(() => rng.next()), k);
      const mask = (set: number[]) => Uint8Array.from({ length: n }, (_, i) => (set.includes(i) ? 1 : 0));
      rows.push({ k, top: await score(mask(top)), bottom: await score(mask(bottom)), random: await score(mask(rnd)) });
      if (!o.quiet) o.log(`masking ${name} k=${k}: top ${rows[rows.length - 1].top.toFixed(3)} bottom ${rows[rows.length - 1].bottom.toFixed(3)}`);
    }
    bar.update(3 * ks.length, total, 'full and window-only');
    const full = await score(new Uint8Array(n).fill(1)), none = await score(new Uint8Array(n));
    bar.update(total, total);
    bar.finish();
    // Atomic: the file's existence marks this model done, so a killed run must not leave half of it.
    writeFileAtomic(file, JSON.stringify({ model: name, dataset, n: items.length, metric: dataset === 'stories' ? 'loglik@16' : 'exact_match', window: 8, full, none, rows }, null, 1) + '\n');
  }
}

/**
 * Mean score of items when only the coalition's heads keep the full prompt: the head game's `metric` utility
 * (greedy answer, task metric; the same prompts as `cokv eval`), or `loglik` for stories.
 */
async function maskedScorer(model: CokvModel, dataset: string, items: ReturnType<typeof loadEvalItems>): Promise<(s: Uint8Array) => Promise<number>> {
  const samples = await buildSamples(dataset, items, model);
  const game = dataset === 'stories'
    ? new ModelGame(model, samples, { utility: 'loglik', window: 8, maxNew: 16, batchSize: 16 })
    : new ModelGame(model, samples, { utility: 'metric', window: 8, maxNew: datasetInfo(dataset).maxNewTokens, batchSize: 16, ...metricGameOptions(dataset) });
  return async (s) => game.evaluate([s])[0];
}

async function estimator(o: ExperimentOptions): Promise<void> {
  const p = paths(o);
  const out = path.join(o.out, 'estimator');
  fs.mkdirSync(out, { recursive: true });
  const summary: Record<string, unknown> = {};
  for (const name of ['cokv-retrieval-tiny', 'stories260K']) {
    const prof = readProfile(defaultProfile(o, name));
    const n = prof.shape[0] * prof.shape[1];
    summary[name] = {
      samplesPerRun: prof.samples, converged: prof.converged, maeHistory: prof.maeHistory, cost: prof.cost, n,
      runAgreement: compareValues(prof.runStates[0].values.flat(), prof.runStates[1].values.flat()),
      coreHours: prof.cost.seconds / 3600,
    };
  }
  // Exact Shapley by enumeration on the 16-player retrieval game (few validation items: 2^16 coalitions each).
  const exactFile = path.join(out, 'exact-retrieval-tiny.json');
  if (!fs.existsSync(exactFile)) {
    const model = await loadModel(p.tiny);
    let items = loadEvalItems('retrieval', p.retrievalData).filter((it) => TASKS.includes(it.task ?? '') && it.length === 512);
    items = splitItems(items, o.seed).validation.slice(0, o.quick ? 1 : 2);
    const samples = await buildSamples('retrieval', items, model);
    const game = new ModelGame(model, samples, { utility: 'loglik', window: 8, maxNew: o.quick ? 3 : 6, batchSize: 64 });
    const n = 16;
    // Quick mode: a 10-player sub-game (players 0..9 vary, the other heads held full).
    const sub = o.slice ? 4 : o.quick ? 10 : 16;
    const sizes = defaultSizes(sub);
    const bar = new ProgressBar('exact enumeration (coalitions)', o.quiet);
    const r = enumerateGame(game, { players: sub, sizes, chunk: 512, onProgress: (d, t) => bar.update(d, t) });
    bar.finish();
    if (!o.quiet) o.log(`exact enumeration: ${r.utilities.length} coalitions in ${formatDuration(r.seconds)}`);
    const { shapley, sliced, seconds } = r;
    writeFileAtomic(exactFile, JSON.stringify({ players: sub, heldFull: n - sub, items: items.map((i) => i.id), utility: 'loglik', sizes, shapley, sliced, seconds }, null, 1) + '\n');
  }
  const exact = JSON.parse(fs.readFileSync(exactFile, 'utf8')) as { players: number; shapley: number[]; sliced: number[] };
  const prof = readProfile(profileFile(o, 'cokv-retrieval-tiny'));
  const est = prof.values.flat().slice(0, exact.players);
  summary.exact = {
    players: exact.players,
    ssvVsExactSliced: compareValues(est, exact.sliced),
    ssvVsExactShapley: compareValues(est, exact.shapley),
    exactSlicedVsShapley: compareValues(exact.sliced, exact.shapley),
    note: exact.players < 16 ? 'quick mode: sub-game of the first players with the other heads held full; the profile values come from the full 16-player game' : 'full 16-player game',
  };
  writeFileAtomic(path.join(out, 'summary.json'), JSON.stringify(summary, null, 1) + '\n');
}

async function sensitivity(o: ExperimentOptions): Promise<void> {
  const p = paths(o), pl = plan(o.quick, o.slice);
  const out = path.join(p.runs, 'sensitivity');
  const base: Omit<EvalStep, 'presses' | 'budgets' | 'out'> = { model: p.tiny, data: p.retrievalData, dataset: 'retrieval', subset: ['multikey'], lengths: [512],
    split: 'test', splitSeed: o.seed, limit: o.slice ? 1 : o.quick ? 3 : 12, headScores: headScoresFile(o, 'cokv-retrieval-tiny') };
  const tinyProfile = defaultProfile(o, 'cokv-retrieval-tiny');
  const budgets = o.quick ? [32] : [128, 256];
  for (const alpha of o.slice ? [1] : o.quick ? [0, 1, 4] : [0, 1, 2, 4, 8]) {
    await evalStep({ ...base, presses: ['cokv'], budgets, alpha, profile: tinyProfile, out: path.join(out, `alpha-${alpha}`) }, o);
  }
  for (const w of o.slice ? [8] : [4, 8, 16]) {
    await evalStep({ ...base, presses: ['snapkv', 'cokv'], budgets, window: w, profile: tinyProfile, out: path.join(out, `window-${w}`) }, o);
  }
  // Utility choice: profiles with each utility (same samples budget), then CoKV with each.
  const utilities: UtilityKind[] = o.quick ? ['loglik', 'kl'] : ['metric', 'loglik', 'kl'];
  for (const utility of utilities) {
    const f = profileFile(o, 'cokv-retrieval-tiny', utility);
    const want = o.sensitivitySamples ?? pl.profileSamples;
    if (!fs.existsSync(f) || (!readProfile(f).converged && readProfile(f).samples < want)) {
      await profileStep({ model: p.tiny, data: p.retrievalData, task: 'retrieval', subset: TASKS, lengths: o.quick ? [512] : undefined,
        utility, split: 'validation', runs: 2, seed: o.seed, samples: want, limit: pl.profileLimit, out: f, resume: fs.existsSync(f) }, o);
    }
    await evalStep({ ...base, presses: ['cokv'], budgets, profile: f, out: path.join(out, `utility-${utility}`) }, o);
  }
  // Slice sizes H (full mode): one size n/2 (the Qwen3 tree's choice) and one small size n/8, loglik utility.
  if (!o.quick) {
    for (const [label, sizes] of [['H8', [8]], ['H2', [2]]] as const) {
      const f = profileFile(o, 'cokv-retrieval-tiny', 'loglik', `-${label}`);
      const want = o.sensitivitySamples ?? pl.profileSamples;
      if (!fs.existsSync(f) || (!readProfile(f).converged && readProfile(f).samples < want)) {
        await profileStep({ model: p.tiny, data: p.retrievalData, task: 'retrieval', subset: TASKS, sizes: [...sizes],
          utility: 'loglik', split: 'validation', runs: 2, seed: o.seed, samples: want, out: f, resume: fs.existsSync(f) }, o);
      }
      await evalStep({ ...base, presses: ['cokv'], budgets, profile: f, out: path.join(out, `sizes-${label}`) }, o);
    }
  }
}

async function quant(o: ExperimentOptions): Promise<void> {
  const p = paths(o);
  const out = path.join(p.runs, 'quant');
  const common: Omit<EvalStep, 'budgets' | 'out'> = { model: p.tiny, data: p.retrievalData, dataset: 'retrieval', subset: ['multikey', 'kv'], lengths: [512],
    split: 'test', splitSeed: o.seed, limit: o.slice ? 1 : o.quick ? 3 : 20, presses: ['cokv', 'snapkv'], ...pressFlags(o, 'cokv-retrieval-tiny') };
  // Same bytes: F32 at budget B holds as many bytes as F16 at 2B, and at least as many as Q8 at
  // ⌊B · 4·hd/(hd + 4)⌋ (int8 rows plus one F32 scale per K and V row).
  const base = o.quick ? [16, 32] : [16, 32, 64];
  const { headDim } = (await openModel(p.tiny)).config;
  await evalStep({ ...common, budgets: base, out: path.join(out, 'f32') }, o);
  for (const dtype of ['f16', 'q8'] as const) {
    const budgets = base.map((b) => equalBytesLength(b, dtype, headDim));
    await evalStep({ ...common, budgets, kvDtype: dtype, out: path.join(out, dtype) }, o);
  }
}

/**
 * Memory and latency (no quality claim): a random-weight model with SmolLM2-135M's exact shapes and its real
 * tokenizer, written as a Hugging Face folder in a temp dir, measured by `cokv bench` (one process per config).
 */
async function memory(o: ExperimentOptions): Promise<void> {
  const file = path.join(o.out, 'bench', 'smollm2-135m-random.json');
  if (fs.existsSync(file)) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cokv-smollm2-'));
  const modelDir = path.join(dir, 'smollm2-135m-random');
  fs.mkdirSync(modelDir);
  const tokDir = path.join(o.assets, 'tokenizers/SmolLM2-135M-Instruct');
  fs.copyFileSync(path.join(tokDir, 'config.json'), path.join(modelDir, 'config.json'));
  fs.copyFileSync(path.join(tokDir, 'tokenizer.json'), path.join(modelDir, 'tokenizer.json'));
  const c = SMOLLM2_SHAPE;
  const rng = new Rng(o.seed + 1);
  const t = (name: string, rows: number, cols?: number) => {
    const n = rows * (cols ?? 1);
    const data = new Float32Array(n);
    const scale = cols ? 1 / Math.sqrt(cols) : 0;
    for (let i = 0; i < n; i++) data[i] = cols ? (rng.next() * 2 - 1) * scale : 1;
    return { name, shape: cols ? [rows, cols] : [rows], dtype: 'BF16' as const, data };
  };
  const tensors = [t('model.embed_tokens.weight', c.vocab, c.hidden), t('model.norm.weight', c.hidden)];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      t(`${p}input_layernorm.weight`, c.hidden), t(`${p}post_attention_layernorm.weight`, c.hidden),
      t(`${p}self_attn.q_proj.weight`, c.heads * c.headDim, c.hidden), t(`${p}self_attn.k_proj.weight`, c.kvHeads * c.headDim, c.hidden),
      t(`${p}self_attn.v_proj.weight`, c.kvHeads * c.headDim, c.hidden), t(`${p}self_attn.o_proj.weight`, c.hidden, c.heads * c.headDim),
      t(`${p}mlp.gate_proj.weight`, c.ffn, c.hidden), t(`${p}mlp.up_proj.weight`, c.ffn, c.hidden), t(`${p}mlp.down_proj.weight`, c.hidden, c.ffn),
    );
  }
  writeSafetensors(path.join(modelDir, 'model.safetensors'), tensors);
  try {
    await benchStep({ model: modelDir, lengths: o.slice ? [256] : o.quick ? [1024, 2048] : [1024, 2048, 4096, 8192],
      presses: ['full', 'snapkv', 'streaming'], budgets: [128], decode: o.slice ? 2 : 16, out: o.out }, o);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** SmolLM2-135M's dimensions (its config.json in the shared assets). */
const SMOLLM2_SHAPE = { vocab: 49152, hidden: 576, layers: 30, heads: 9, kvHeads: 3, headDim: 64, ffn: 1536 };
const STEPS: Record<ExperimentName, (o: ExperimentOptions) => Promise<void>> = { profiles, budget, generated, baselines, masking, estimator, sensitivity, quant, memory, summary };
const NEEDS: Partial<Record<ExperimentName, ExperimentName[]>> = {
  budget: ['profiles'], generated: ['profiles'], baselines: ['profiles', 'generated'], masking: ['profiles'], estimator: ['profiles'], sensitivity: ['profiles'], quant: ['profiles'],
};

export async function runExperiment(name: ExperimentName | 'all', o: ExperimentOptions): Promise<void> {
  if (!fs.existsSync(o.assets)) throw new CokvError(`--assets ${o.assets}: folder not found (the shared assets are needed)`, 'file');
  fs.mkdirSync(o.out, { recursive: true });
  const names: ExperimentName[] = name === 'all' ? [...EXPERIMENTS] : [...(NEEDS[name] ?? []), name];
  for (const [i, n] of names.entries()) {
    const t0 = performance.now();
    o.log(`== step ${i + 1}/${names.length}: ${n}${o.quick ? ' (quick)' : ''}`);
    await STEPS[n](o);
    o.log(`== ${n} done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
}
