import fs from 'node:fs';
import type { Command } from 'commander';
import { CokvError, systemErrorLine } from '../errors.js';
import { loadModel, type CokvModel, type GenerateOptions, type Generation } from '../engine.js';
import { Sequence } from '../session/sequence.js';
import { readSavedCacheHeader } from '../cache/save.js';
import type { Press } from '../press/types.js';
import { DEFAULT_PREFILL_CHUNK } from '../model/forward.js';
import { checkDecodeOptions } from '../generate/generation.js';
import { formatBytes, KV_DTYPE_HELP, kvDtypeFlag, numberFlag } from './util.js';
import { addPressFlags, pressFromFlags, type PressFlags } from './press-flags.js';
import { addBosFlags, bosOverride, type BosFlags } from './bos-flags.js';

interface GenerateFlags extends PressFlags, BosFlags {
  model: string;
  prompt?: string;
  promptFile?: string;
  chat?: boolean;
  system?: string;
  maxTokens?: string;
  temperature?: string;
  topK?: string;
  topP?: string;
  minP?: string;
  repetitionPenalty?: string;
  seed?: string;
  stop: string[];
  json?: boolean;
  jsonStream?: boolean;
  kvDtype?: string;
  saveCache?: string;
  loadCache?: string;
  prefillEvict?: boolean;
}

export function registerGenerate(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const cmd = program
    .command('generate')
    .description('generate text from a prompt, streaming to stdout; a summary line goes to stderr')
    .requiredOption('--model <path>', 'GGUF file, Hugging Face folder, or llama2.c checkpoint')
    .option('--prompt <text>', 'prompt text')
    .option('--prompt-file <file>', 'read the prompt from a file')
    .option('--chat', 'wrap the prompt as a user message with the model\'s chat template')
    .option('--system <text>', 'system message (with --chat)')
    .option('--max-tokens <n>', 'most tokens to generate', '256')
    .option('--temperature <t>', '0 = greedy', '0')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
    .option('--top-p <p>', 'nucleus sampling threshold (1 = off)')
    .option('--min-p <p>', 'drop tokens below p × the top probability')
    .option('--repetition-penalty <r>', 'penalise tokens already seen (1 = off)')
    .option('--seed <s>', 'sampling seed')
    .option('--stop <str>', 'stop string (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--kv-dtype <t>', `${KV_DTYPE_HELP} (default f16; with --load-cache, the file's)`)
    .option('--json', 'print one JSON object (text, tokens, stats) instead of streaming')
    .option('--json-stream', 'print one JSON line per chunk ({"token", "text"}), then the --json object as the last line')
    .option('--save-cache <file>', 'after the prompt\'s prefill (and compression), save the cache to this file')
    .option('--load-cache <file>', 'start from a cache saved by --save-cache: the prompt is appended to it uncompressed; with --press, the loaded cache is compressed first (it must have been saved after a prefill with no --press)')
    .option('--prefill-evict', PREFILL_EVICT_HELP);
  addBosFlags(cmd);
  addPressFlags(cmd).action((flags: GenerateFlags) => run(() => generateCommand(flags)));
}

/**
 * `--prefill-evict` (generate, chat, serve), refused before the model loads: without a press there is nothing to
 * evict, and a prefill chunk must hold the press's window.
 */
export function checkPrefillEvictFlags(f: PressFlags & { prefillEvict?: boolean }): void {
  if (!f.prefillEvict) return;
  if ((f.press ?? 'full') === 'full') throw new CokvError('--prefill-evict: needs --press (with the full cache nothing is evicted)', 'flag');
  const window = numberFlag('--window', f.window, { integer: true, min: 1 }) ?? 0;
  if (window > DEFAULT_PREFILL_CHUNK) throw new CokvError(`--prefill-evict: --window ${window} is longer than the ${DEFAULT_PREFILL_CHUNK}-token prefill chunk`, 'flag');
}

/** Help text of `--prefill-evict` (generate, chat, serve). */
export const PREFILL_EVICT_HELP = 'with --press: compress after every 512-token prefill chunk, so KV held stays ≤ budget + chunk per head (default: full K/V until the last chunk, then compress: the exact result)';

/**
 * The prompt file's text, read only when it can fit: a file larger than 3 × `maxChars` bytes holds more than
 * `maxChars` UTF-16 code units (a code unit takes at most 3 UTF-8 bytes), so it is refused without being read.
 */
function readPromptFile(fd: number, file: string, maxChars: number, ctx: number): string {
  const maxBytes = 3 * maxChars;
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    const st = fs.fstatSync(fd);
    if (st.isFile() && st.size > maxBytes) throw new CokvError(`--prompt-file ${file}: ${st.size} bytes cannot fit the model's context of ${ctx} tokens`, 'prompt');
    // Pipes and devices have no size: read at most one byte past the bound.
    const buf = Buffer.alloc(1 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(Buffer.from(buf.subarray(0, n)));
      total += n;
      if (total > maxBytes) throw new CokvError(`--prompt-file ${file}: more than ${maxBytes} bytes cannot fit the model's context of ${ctx} tokens`, 'prompt');
    }
  } catch (e) {
    if (e instanceof CokvError) throw e;
    throw new CokvError(`--prompt-file: cannot read ${file} (${systemErrorLine(e) ?? (e as Error).message})`, 'file');
  } finally {
    fs.closeSync(fd);
  }
  return Buffer.concat(chunks, total).toString('utf8');
}

async function generateCommand(f: GenerateFlags): Promise<void> {
  if ((f.prompt === undefined) === (f.promptFile === undefined)) {
    throw new CokvError('--prompt/--prompt-file: give exactly one of them', 'flag');
  }
  // Opened now so a missing file is reported before the model loads; read once the model bounds its size.
  let promptFd: number | undefined;
  if (f.promptFile !== undefined) {
    try {
      promptFd = fs.openSync(f.promptFile, 'r');
      if (fs.fstatSync(promptFd).isDirectory()) throw new Error('is a folder');
    } catch {
      if (promptFd !== undefined) fs.closeSync(promptFd);
      throw new CokvError(`--prompt-file: cannot read ${f.promptFile}`, 'file');
    }
    const st = fs.fstatSync(promptFd);
    if (st.isFile() && st.size === 0) {
      fs.closeSync(promptFd);
      throw new CokvError(`--prompt-file: the prompt is empty (${f.promptFile})`, 'prompt');
    }
  }
  bosOverride(f);
  if (f.chat && (f.addBos || f.bos === false)) {
    throw new CokvError('--add-bos/--no-bos: not with --chat (the chat template writes BOS itself)', 'flag');
  }
  if (f.prompt !== undefined && f.prompt.length === 0) throw new CokvError('--prompt: the prompt is empty', 'prompt');
  if (f.stop.some((s) => s.length === 0)) throw new CokvError('--stop: a stop string must not be empty', 'flag');
  const repetitionPenalty = numberFlag('--repetition-penalty', f.repetitionPenalty);
  if (repetitionPenalty !== undefined && !(repetitionPenalty > 0)) {
    throw new CokvError(`--repetition-penalty: ${repetitionPenalty} must be > 0 (1 = off)`, 'flag');
  }
  const opts: GenerateOptions = {
    maxTokens: numberFlag('--max-tokens', f.maxTokens, { integer: true, min: 0 }),
    temperature: numberFlag('--temperature', f.temperature, { min: 0 }),
    topK: numberFlag('--top-k', f.topK, { integer: true, min: 0 }),
    topP: numberFlag('--top-p', f.topP, { min: 0, max: 1 }),
    minP: numberFlag('--min-p', f.minP, { min: 0, max: 1 }),
    repetitionPenalty,
    seed: numberFlag('--seed', f.seed, { integer: true }),
    stop: f.stop,
  };
  opts.kvDtype = kvDtypeFlag(f.kvDtype);
  checkPrefillEvictFlags(f);
  if (f.loadCache !== undefined && f.prefillEvict) {
    throw new CokvError('--prefill-evict: not with --load-cache (the loaded cache is prefilled already; --press compresses it as it was saved)', 'flag');
  }
  if (f.loadCache !== undefined && f.chat) throw new CokvError('--chat: not with --load-cache (the loaded cache already holds its context; the prompt is appended as plain text)', 'flag');
  const model = await loadModel(f.model);
  const ctx = model.config.contextLength;
  if ((opts.maxTokens ?? 256) > ctx) {
    throw new CokvError(`--max-tokens: ${opts.maxTokens ?? 256} is more than the model's context of ${ctx} tokens`, 'flag');
  }
  const prompt = promptFd !== undefined ? readPromptFile(promptFd, f.promptFile!, model.maxPromptChars(), ctx) : f.prompt!;
  if (prompt.length === 0) throw new CokvError(`--prompt-file: the prompt is empty (${f.promptFile})`, 'prompt');
  opts.addBos = bosOverride(f, model.tokenizer, f.model);
  opts.press = pressFromFlags(f, model.config);
  opts.prefillEvict = f.prefillEvict === true ? true : undefined;
  let gen: Generation;
  try {
    if (f.saveCache !== undefined || f.loadCache !== undefined) {
      gen = await sequenceGeneration(model, f, prompt, opts);
    } else {
      gen = f.chat
        ? await model.chat([...(f.system ? [{ role: 'system', content: f.system }] : []), { role: 'user', content: prompt }], opts)
        : model.generate(prompt, opts);
    }
  } catch (e) {
    // The engine names its argument ("prompt: …"); on the command line that is the flag (and file) it came from.
    if (e instanceof CokvError && e.kind === 'prompt' && e.message.startsWith('prompt: ')) {
      throw new CokvError(`${f.promptFile !== undefined ? `--prompt-file ${f.promptFile}` : '--prompt'}: ${e.message.slice(8)}`, 'prompt');
    }
    throw e;
  }
  for await (const chunk of gen) {
    // The engine's last chunk (token -1) carries only text held back for a pending stop string or UTF-8 sequence.
    if (f.jsonStream) process.stdout.write(JSON.stringify(chunk.token >= 0 ? chunk : { text: chunk.text }) + '\n');
    else if (!f.json && chunk.text) process.stdout.write(chunk.text);
  }
  const s = gen.stats!;
  if (f.json || f.jsonStream) {
    // The engine's stats plus the backend that ran (native / wasm / ts), as the summary line names it.
    process.stdout.write(JSON.stringify({ text: gen.text, tokens: gen.tokens, stats: { ...s, backend: model.transformer.backend.name } }) + '\n');
    return;
  }
  process.stdout.write('\n');
  process.stderr.write(
    `prompt ${s.promptTokens} tok | generated ${s.generatedTokens} tok (${s.stopReason}) | prefill ${s.prefillMs.toFixed(1)} ms | ` +
      `decode ${s.decodeTokensPerSecond.toFixed(1)} tok/s | KV ${s.kvDtype} ${formatBytes(s.kvBytes)} held vs ${formatBytes(s.kvFullBytes)} full (${((100 * s.kvBytes) / Math.max(1, s.kvFullBytes)).toFixed(1)}%) | ` +
      `peak RSS ${formatBytes(s.peakRssBytes)} | backend ${model.transformer.backend.name}\n`,
  );
}

/**
 * --save-cache / --load-cache: the run goes through a Sequence, so the cache can be written after the prompt's
 * prefill and compression, or the prompt appended to a loaded one.
 */
async function sequenceGeneration(model: CokvModel, f: GenerateFlags, prompt: string, opts: GenerateOptions): Promise<Generation> {
  let text = prompt;
  let addSpecial = opts.addSpecial;
  if (f.chat) {
    text = await model.applyChatTemplate([...(f.system ? [{ role: 'system', content: f.system }] : []), { role: 'user', content: prompt }]);
    addSpecial = false; // the template writes BOS itself
  }
  // Refuse bad sampling options before loading or prefilling anything.
  const maxTokens = checkDecodeOptions(opts, model.config.contextLength);
  if (f.loadCache !== undefined) {
    const seq = await Sequence.load(model, f.loadCache, { kvDtype: f.kvDtype !== undefined ? opts.kvDtype : undefined });
    // --press compresses the loaded cache with the window queries its prefill kept (the result compressing right
    // after that prefill gives); the prompt is then appended uncompressed (the context-only protocol).
    if (opts.press) {
      checkCompressible(seq, f.loadCache, opts.press);
      await seq.compress(opts.press);
    }
    await seq.append(text, { reserve: maxTokens, addSpecial, addBos: opts.addBos });
    if (f.saveCache !== undefined) await seq.save(f.saveCache);
    return seq.generate(opts);
  }
  const seq = await model.createSequence({ kvDtype: opts.kvDtype });
  await seq.prefill(text, { press: opts.press, reserve: maxTokens, addSpecial, addBos: opts.addBos, prefillEvict: opts.prefillEvict });
  if (f.saveCache !== undefined) await seq.save(f.saveCache);
  return seq.generate(opts);
}

/**
 * Refuse `--press` on a loaded cache that cannot be compressed exactly, with one line saying why: a press scores
 * with the window queries of the prefill, which the file keeps only when it was saved right after a plain one.
 */
function checkCompressible(seq: Sequence, file: string, press: Press): void {
  const { version, header } = readSavedCacheHeader(file);
  const rows = header.queryRows ?? 0;
  const s = seq.stats;
  if (rows === 0) {
    const why = version < 2 ? 'its format (version 1) keeps no window queries'
      : s.kvBudgetedBytes < s.kvBudgetedFullBytes ? 'it is compressed already, and a compressed cache keeps no window queries'
        : s.pendingTokens > 0 ? 'it was saved after a generation, which drops the window queries'
          : 'it was saved without the window queries of its last prefill';
    throw new CokvError(`--press: cannot compress ${file}: ${why} (save it with --save-cache and no --press, then compress it with --load-cache --press)`, 'flag');
  }
  if (press.window !== undefined && press.window > rows) {
    throw new CokvError(`--window: ${press.window} is longer than the ${rows} window queries ${file} keeps`, 'flag');
  }
}
