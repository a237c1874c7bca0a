// llama.cpp references through node-llama-cpp (its prebuilt CPU binary), as a line-based JSON server for
// make_arch_fixtures.py. One request per stdin line, one answer per stdout line:
//   {"op": "run", "model": PATH, "ids": [int], "steps": N, "kv": "default" | "f32"}
//     -> {"greedy": [N ids], "logits": [n_vocab floats]}   greedy: context.getSequence().evaluate(ids,
//        {temperature: 0, yieldEogToken: true}) (no EOS stop); logits: raw last-prompt-position logits from
//        controlledEvaluate(..., {generateNext: {logits: true}}) on a cleared sequence.
//   {"op": "tokenize", "model": PATH, "texts": [str]} -> {"ids": [[int]]}   model.tokenize(text, true): special
//        tokens parsed, no BOS added (what transformers' tokenizer(text, add_special_tokens=False) does here).
//   {"op": "detokenize", "model": PATH, "ids": [[int]]} -> {"texts": [str]}
//   {"op": "info"} -> {"nodeLlamaCpp": version}
// usage: NLC_DIR=/tmp/nlc/node_modules/node-llama-cpp node tools/reference/llamacpp_ref.mjs
import { readFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

const nlcDir = process.env.NLC_DIR;
if (!nlcDir) throw new Error('set NLC_DIR to the node-llama-cpp package folder');
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(path.join(nlcDir, 'dist/index.js')).href);
const version = JSON.parse(readFileSync(path.join(nlcDir, 'package.json'), 'utf8')).version;
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });

let cur = null; // { key, model, ctx, seq }: one model at a time keeps memory flat

// kv: 'default' = node-llama-cpp's defaults (F16 K/V cache, flash attention "auto"), what a user runs;
// 'f32' = F32 K/V cache (experimentalKvCacheKeyType / ValueType) and flash attention off: llama.cpp's arithmetic
// without the F16 rounding of K/V and of the CPU flash-attention kernel (both are needed: either alone leaves it).
async function open(modelPath, kv = 'default') {
  if (cur?.path === modelPath && cur.kv === kv) return cur;
  if (cur?.path !== modelPath && cur) {
    await cur.ctx.dispose();
    await cur.model.dispose();
    cur = null;
  } else if (cur) await cur.ctx.dispose();
  const model = cur?.model ?? (await llama.loadModel({ modelPath }));
  const extra = kv === 'f32'
    ? { experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false }
    : {};
  const ctx = await model.createContext({ contextSize: 512, batchSize: 512, threads: 1, sequences: 1, ...extra });
  cur = { path: modelPath, kv, model, ctx, seq: ctx.getSequence() };
  return cur;
}

async function lastLogits(m, ids) {
  await m.seq.clearHistory();
  const out = await m.seq.controlledEvaluate([...ids.slice(0, -1), [ids.at(-1), { generateNext: { logits: true } }]]);
  const lg = out.at(-1).next.logits;
  const logits = new Array(lg.size);
  for (const [tok, v] of lg) logits[tok] = v;
  return logits;
}

async function run({ model: p, ids, steps, kv }) {
  const m = await open(p, kv);
  const logits = await lastLogits(m, ids);
  await m.seq.clearHistory();
  const greedy = [];
  for await (const tok of m.seq.evaluate(ids, { temperature: 0, yieldEogToken: true })) {
    greedy.push(tok);
    if (greedy.length >= steps) break;
  }
  return { greedy, logits };
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  let res;
  try {
    if (req.op === 'run') res = await run(req);
    else if (req.op === 'tokenize') {
      const m = await open(req.model, cur?.path === req.model ? cur.kv : 'default');
      res = { ids: req.texts.map((t) => [...m.model.tokenize(t, true)]) };
    } else if (req.op === 'detokenize') {
      const m = await open(req.model, cur?.path === req.model ? cur.kv : 'default');
      res = { texts: req.ids.map((ids) => m.model.detokenize(ids, true)) };
    } else if (req.op === 'info') res = { nodeLlamaCpp: version };
    else throw new Error(`unknown op ${req.op}`);
  } catch (e) {
    res = { error: String(e?.stack ?? e) };
  }
  process.stdout.write(JSON.stringify(res) + '\n');
}
if (cur) {
  await cur.ctx.dispose();
  await cur.model.dispose();
}
await llama.dispose();
