import type { Command } from 'commander';
import { fullAttentionLayers, parameterCount, type ModelConfig } from '../model/config.js';
import { slidingLayers } from '../press/scope.js';
import { openModel } from '../model/load.js';
import { CokvError } from '../errors.js';
import { describeRule, type Tokenizer } from '../model/tokenizer/types.js';
import { resolveBackend } from '../engine.js';
import { FALLBACK_SLOWDOWN, backendSelection } from '../backend/select.js';
import { NativeBackend, nativeAddonFile } from '../backend/native.js';

export function registerInspect(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('inspect')
    .description('show a model file\'s format, architecture, dimensions, dtypes and players, and the backend that would run it')
    .argument('<path>', 'GGUF file, Hugging Face folder, or llama2.c checkpoint')
    .option('--json', 'machine-readable output')
    .action((p: string, flags: { json?: boolean }) => run(() => inspectCommand(p, flags)));
}

/** What encoding a prompt does (generate without --add-bos / --no-bos), and which metadata says so. */
type TokenizerInfo =
  | {
    bos: { add: boolean; reason: string; id: number | null; token: string | null };
    eos: { add: boolean; reason: string; ids: number[]; tokens: string[] };
    notes: string[];
  }
  | { error: string };

async function inspectCommand(p: string, flags: { json?: boolean }): Promise<void> {
  const src = await openModel(p);
  const c = src.config;
  const dtypes: Record<string, number> = {};
  for (const t of src.tensors) dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
  let tok: Tokenizer | undefined, tokError: string | undefined;
  try {
    tok = await src.loadTokenizer();
  } catch (e) {
    if (!(e instanceof CokvError)) throw e;
    tokError = e.message;
  }
  const rule = tok?.specialRule;
  const tokenizer: TokenizerInfo = tok
    ? {
      bos: {
        add: tok.addBosDefault, reason: rule?.bosReason ?? 'unknown',
        id: tok.bosId ?? null, token: tok.bosId === undefined ? null : tok.tokenText(tok.bosId),
      },
      eos: {
        add: rule?.addEos ?? false, reason: rule?.eosReason ?? 'unknown',
        ids: tok.eosIds, tokens: tok.eosIds.map((id) => tok.tokenText(id)),
      },
      notes: rule?.notes ?? [],
    }
    : { error: tokError ?? 'no tokenizer' };
  const info = {
    path: src.path,
    format: src.format,
    architecture: c.architecture,
    layers: c.numLayers,
    hiddenSize: c.hiddenSize,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    intermediateSize: c.intermediateSize,
    vocabSize: c.vocabSize,
    contextLength: c.contextLength,
    ropeTheta: c.ropeTheta,
    ropeScaling: c.ropeFreqFactors ? 'rope_freqs tensor' : (c.ropeScaling?.type ?? 'none'),
    rmsNormEps: c.rmsNormEps,
    tiedEmbeddings: c.tiedEmbeddings,
    attentionBias: c.attentionBias,
    recipe: c.recipe,
    rope: ropeSummary(c),
    parameters: parameterCount(c),
    tensors: src.tensors.length,
    dtypes,
    // Players (and budgeted heads) are the KV heads of the full-attention layers; sliding layers keep their window.
    players: { layers: fullAttentionLayers(c).length, kvHeads: c.numKvHeads, total: fullAttentionLayers(c).length * c.numKvHeads, fullAttentionLayers: fullAttentionLayers(c) },
    slidingLayers: slidingLayers(c),
    chatTemplate: src.chatTemplate !== undefined,
    tokenizer,
    ...backendInfo(),
  };
  if (flags.json) {
    process.stdout.write(JSON.stringify(info, null, 2) + '\n');
    return;
  }
  const rows: [string, string][] = [
    ['path', info.path],
    ['format', info.format],
    ['architecture', info.architecture],
    ['layers', String(info.layers)],
    ['hidden size', String(info.hiddenSize)],
    ['heads / KV heads', `${info.heads} / ${info.kvHeads} (head_dim ${info.headDim})`],
    ['FFN size', String(info.intermediateSize)],
    ['vocab', String(info.vocabSize)],
    ['context length', String(info.contextLength)],
    ['RoPE', info.rope],
    ['block', recipeSummary(c.recipe)],
    ['RMS eps', String(info.rmsNormEps)],
    ['tied embeddings', String(info.tiedEmbeddings)],
    ['attention bias', String(info.attentionBias)],
    ['parameters', info.parameters.toLocaleString('en-US')],
    ['tensors', `${info.tensors} (${Object.entries(dtypes).map(([k, v]) => `${k} ${v}`).join(', ')})`],
    ['players', info.slidingLayers.length === 0
      ? `${info.players.layers} layers × ${info.players.kvHeads} KV heads = ${info.players.total}`
      : `${info.players.layers} full-attention layer${info.players.layers === 1 ? '' : 's'} × ${info.players.kvHeads} KV heads = ${info.players.total}`
        + ` (layers ${info.players.fullAttentionLayers.join(', ') || 'none'})`],
    ...(info.slidingLayers.length ? [['sliding layers', slidingSummary(info.slidingLayers)] as [string, string]] : []),
    ['chat template', info.chatTemplate ? 'yes' : 'no'],
  ];
  const t = info.tokenizer;
  if (!('error' in t)) {
    const tokName = (s: string | null, id: number | null): string => (id === null ? 'none' : `${JSON.stringify(s)} (id ${id})`);
    rows.push(['adds BOS', `${describeRule(t.bos.add, t.bos.reason)}; BOS token ${tokName(t.bos.token, t.bos.id)}`]);
    rows.push(['adds EOS', `${describeRule(t.eos.add, t.eos.reason)}; EOS ${t.eos.ids.length === 0 ? 'none' : t.eos.ids.map((id, i) => tokName(t.eos.tokens[i], id)).join(', ')}`]);
    for (const n of t.notes) rows.push(['tokenizer note', n]);
  } else {
    rows.push(['tokenizer', `unavailable: ${t.error}`]);
  }
  rows.push(['backend', info.backendDetail]);
  for (const n of info.backendNotes) rows.push(['backend note', n]);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
}

/**
 * The backend `generate` would use here ($COKV_BACKEND / --backend, default auto), chosen the same way; a kind that
 * is unavailable is reported, not an error (inspect reads the file either way).
 */
function backendInfo(): { backend: string | null; backendDetail: string; backendNotes: string[] } {
  try {
    const be = resolveBackend();
    const notes = backendSelection()?.notes ?? [];
    if (be instanceof NativeBackend) {
      const i = be.addon.info();
      return { backend: be.name, backendDetail: `native (${nativeAddonFile() ?? 'addon'}; AVX2 ${i.avx2 ? 'yes' : 'no'}${i.vnniKind && i.vnniKind !== 'none' ? `, ${i.vnniKind.toUpperCase()}` : ''}, ${i.threads} thread${i.threads === 1 ? '' : 's'})`, backendNotes: notes };
    }
    const fellBack = backendSelection()?.warning !== undefined && (be.name === 'wasm' || be.name === 'ts');
    return { backend: be.name, backendDetail: fellBack ? `${be.name}, ${FALLBACK_SLOWDOWN[be.name as 'wasm' | 'ts']}` : be.name, backendNotes: notes };
  } catch (e) {
    if (!(e instanceof CokvError)) throw e;
    return { backend: null, backendDetail: `unavailable: ${e.message}`, backendNotes: [] };
  }
}

/** "q/k norm, post-norms, GeGLU (tanh), attention scale 1/√24, embeddings × 8": what the block does beyond Llama's. */
function recipeSummary(r: ModelConfig['recipe']): string {
  const parts = [r.activation === 'silu' ? 'SwiGLU' : 'GeGLU (tanh GELU)'];
  if (r.qkNorm) parts.push('q/k RMSNorm');
  if (r.postNorms) parts.push('post-attention and post-FFN norms');
  if (r.attentionBias) parts.push('q/k/v bias');
  parts.push(`attention scale 1/√${+(1 / r.attentionScale ** 2).toPrecision(6)}`);
  if (r.embeddingScale !== 1) parts.push(`embeddings × ${+r.embeddingScale.toPrecision(6)}`);
  if (r.finalLogitSoftcap) parts.push(`logit soft-cap ${r.finalLogitSoftcap}`);
  return parts.join(', ');
}

/** One line per distinct RoPE among the layers: "theta 1000000 (layers 5, 11); theta 10000 (sliding 0-4…); none (3)". */
function ropeSummary(c: ModelConfig): string {
  const groups = new Map<string, number[]>();
  c.layers.forEach((l, i) => {
    const r = l.rope;
    const key = !r ? 'none (NoPE)' : [
      `theta ${r.theta}`,
      r.rotaryDim !== c.headDim ? `rotary ${r.rotaryDim} of ${c.headDim} dims` : '',
      r.freqFactors ? 'rope_freqs factors' : r.scaling ? `${r.scaling.type} scaling` : '',
    ].filter(Boolean).join(', ');
    groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  if (groups.size === 1) return [...groups.keys()][0] === 'none (NoPE)' ? 'none (NoPE)' : `${[...groups.keys()][0]}, every layer`;
  return [...groups].map(([k, ls]) => `${k} (layers ${ls.join(', ')})`).join('; ');
}

/** "0-4, 6-10 (window 512)": runs of consecutive sliding layers, grouped by window. */
function slidingSummary(list: { layer: number; window: number }[]): string {
  const byWindow = new Map<number, number[]>();
  for (const s of list) byWindow.set(s.window, [...(byWindow.get(s.window) ?? []), s.layer]);
  const runs = (ls: number[]): string => {
    const out: string[] = [];
    for (let i = 0; i < ls.length;) {
      let j = i;
      while (j + 1 < ls.length && ls[j + 1] === ls[j] + 1) j++;
      out.push(j > i ? `${ls[i]}-${ls[j]}` : String(ls[i]));
      i = j + 1;
    }
    return out.join(', ');
  };
  return [...byWindow].map(([w, ls]) => `${runs(ls)} (window ${w})`).join('; ') + ` — ${list.length} layer${list.length === 1 ? '' : 's'}, not players`;
}
