/**
 * `cokv chat`: an interactive terminal chat on a ChatSession (src/session/chat-session.ts). Each answer streams;
 * Ctrl-C during an answer cancels it, Ctrl-C at the prompt or Ctrl-D ends the chat. Commands: /stats, /save F,
 * /load F, /reset, /help, /exit.
 */
import fs from 'node:fs';
import readline from 'node:readline';
import type { Command } from 'commander';
import { CokvError, sanitize, systemErrorLine } from '../errors.js';
import { loadModel, type CokvModel } from '../engine.js';
import { ChatSession, type ChatSessionOptions, type ChatSessionStats } from '../session/chat-session.js';
import type { DecodeOptions } from '../generate/generation.js';
import { KV_DTYPE_HELP, formatBytes, kvDtypeFlag, numberFlag } from './util.js';
import { flagWording } from './flag-names.js';
import { addPressFlags, pressFromFlags, type PressFlags } from './press-flags.js';
import { checkPrefillEvictFlags, PREFILL_EVICT_HELP } from './generate.js';

interface ChatFlags extends PressFlags {
  model: string;
  system?: string;
  template?: string;
  maxTokens: string;
  temperature: string;
  topK?: string;
  topP?: string;
  seed?: string;
  minTokens?: string;
  kvDtype?: string;
  maxHistory?: string;
  prefillEvict?: boolean;
  contextShift?: boolean;
}

const HELP = '/stats  /save FILE  /load FILE  /reset  /help  /exit   (Ctrl-C cancels an answer; Ctrl-D or Ctrl-C at the prompt exits)';

export function registerChat(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const cmd = program
    .command('chat')
    .description('interactive chat with the model (its chat template or --template), the KV cache kept between turns')
    .requiredOption('--model <path>', 'GGUF file, Hugging Face folder, or llama2.c checkpoint')
    .option('--system <text>', 'system message')
    .option('--template <file>', 'Jinja chat template file (instead of the model\'s own)')
    .option('--max-tokens <n>', 'most tokens per answer', '256')
    .option('--temperature <t>', '0 = greedy', '0')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
    .option('--top-p <p>', 'nucleus sampling threshold (1 = off)')
    .option('--seed <s>', 'sampling seed')
    .option('--min-tokens <n>', 'EOS cannot end an answer before this many tokens')
    .option('--kv-dtype <t>', `${KV_DTYPE_HELP} (default f16; /load keeps the file's unless given)`)
    .option('--max-history <n>', 'with --press: compress only once the history holds more than n entries per KV head')
    .option('--prefill-evict', `${PREFILL_EVICT_HELP}; applies to every compressed turn`)
    .option('--context-shift', 'when a message would not fit the context, drop the oldest turns after the system message and go on (llama.cpp\'s context shift; not with --kv-dtype q8)');
  addPressFlags(cmd).action((flags: ChatFlags) => run(() => chatCommand(flags)));
}

/** One line for an error shown inside the chat (the chat goes on). */
function errorLine(e: unknown): string {
  if (e instanceof CokvError) return flagWording(e.message);
  return systemErrorLine(e) ?? `internal error: ${sanitize(e instanceof Error ? e.message : String(e))}`;
}

/** The `/stats` text. */
export function formatChatStats(s: ChatSessionStats): string {
  const lines = [
    `turns ${s.turns}, tokens ${s.tokens}, KV ${formatBytes(s.kvBytes)} of ${formatBytes(s.kvFullBytes)} (${s.heldPerHead.toFixed(1)} entries per head), compressions ${s.compressions}, re-prefills ${s.reprefills}${s.shifts > 0 ? `, context shifts ${s.shifts} (${s.shiftedTokens} tokens dropped)` : ''}`,
  ];
  const t = s.lastTurn;
  if (t) {
    const evicted = t.evicted?.map((n, i) => (n > 0 ? `#${i + 1} ${n}` : '')).filter((x) => x !== '').join(', ');
    const compressed = t.compressed ? `, compressed${evicted ? ` (entries evicted: ${evicted})` : ' (nothing evicted)'}` : '';
    const shifted = t.shift ? `, context shift dropped positions ${t.shift.start}..${t.shift.end - 1}` : '';
    lines.push(`last turn: ${t.reusedTokens} tokens reused, ${t.prefilledTokens} prefilled${compressed}${shifted}${t.reprefilled ? ` (re-prefilled: ${t.reprefillReason})` : ''}`);
  }
  if (s.perTurn.length > 0) lines.push(`kept per turn: ${s.perTurn.map((p, i) => `#${i + 1} ${(100 * p.kept).toFixed(0)}%${p.evicted > 0 ? ` (${p.evicted} of ${p.entries} entries evicted)` : ''}${p.shiftedTokens > 0 ? ` (${p.shiftedTokens} tokens shifted out)` : ''}`).join(' ')}`);
  return lines.join('\n');
}

async function chatCommand(f: ChatFlags): Promise<void> {
  const maxTokens = numberFlag('--max-tokens', f.maxTokens, { integer: true, min: 1 })!;
  const decode: DecodeOptions = {
    maxTokens,
    temperature: numberFlag('--temperature', f.temperature, { min: 0 }),
    topK: numberFlag('--top-k', f.topK, { integer: true, min: 0 }),
    topP: numberFlag('--top-p', f.topP, { min: 0, max: 1 }),
    seed: numberFlag('--seed', f.seed, { integer: true }),
    minTokens: numberFlag('--min-tokens', f.minTokens, { integer: true, min: 0 }),
  };
  const maxHistoryTokens = numberFlag('--max-history', f.maxHistory, { integer: true, min: 1 });
  checkPrefillEvictFlags(f);
  if (f.contextShift && f.kvDtype === 'q8') throw new CokvError('--context-shift: not with --kv-dtype q8 (re-rotating int8 keys would quantize them again; use f16 or f32)', 'flag');
  let template: string | undefined;
  if (f.template !== undefined) {
    try {
      template = fs.readFileSync(f.template, 'utf8');
    } catch (e) {
      throw new CokvError(`--template: cannot read ${f.template} (${systemErrorLine(e) ?? (e as Error).message})`, 'file');
    }
  }
  const model: CokvModel = await loadModel(f.model);
  if (template === undefined && !model.source.chatTemplate?.trim()) {
    throw new CokvError(`--template: ${f.model} has no chat template of its own (give one with --template FILE)`, 'flag');
  }
  const press = pressFromFlags(f, model.config);
  if (maxHistoryTokens !== undefined && !press) throw new CokvError('--max-history: needs --press', 'flag');
  const prefillEvict = f.prefillEvict === true ? true : undefined;
  const opts: ChatSessionOptions = { press, system: f.system, kvDtype: kvDtypeFlag(f.kvDtype), maxHistoryTokens, template, prefillEvict, contextShift: f.contextShift === true ? true : undefined };
  let session = await model.createChatSession(opts);
  const out = (s: string): void => { process.stdout.write(s); };
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY === true });
  let answering: AbortController | undefined;
  let closed = false;
  let wake: ((line: string | undefined) => void) | undefined;
  const lines: string[] = [];
  rl.on('line', (line) => { if (wake) { const w = wake; wake = undefined; w(line); } else lines.push(line); });
  // End of input (Ctrl-D, or the end of piped lines) lets a running answer finish; the chat ends after it.
  rl.on('close', () => { closed = true; wake?.(undefined); });
  // In a terminal readline turns Ctrl-C into this event; a piped chat gets the process signal.
  const interrupt = (): void => {
    if (answering) answering.abort();
    else rl.close();
  };
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  const next = (): Promise<string | undefined> => {
    if (lines.length > 0) return Promise.resolve(lines.shift());
    if (closed) return Promise.resolve(undefined);
    rl.setPrompt('> ');
    rl.prompt();
    return new Promise((resolve) => { wake = resolve; });
  };
  out(`cokv chat: ${model.source.path} (${HELP})\n`);
  try {
    for (let line = await next(); line !== undefined; line = await next()) {
      const text = line.trim();
      if (text === '') continue;
      try {
        if (text.startsWith('/')) {
          const [command, ...rest] = text.split(/\s+/);
          const arg = rest.join(' ');
          if (command === '/exit' || command === '/quit') break;
          else if (command === '/help') out(`${HELP}\n`);
          else if (command === '/stats') out(`${formatChatStats(session.stats)}\n`);
          else if (command === '/reset') { await session.reset(); out('conversation cleared\n'); }
          else if (command === '/save') {
            if (!arg) throw new CokvError('/save: give a file', 'flag');
            await session.save(arg);
            out(`saved ${session.stats.turns} turns to ${arg} (cache in ${arg}.kvc)\n`);
          } else if (command === '/load') {
            if (!arg) throw new CokvError('/load: give a file', 'flag');
            const loaded = await ChatSession.load(model, arg, { press, maxHistoryTokens, prefillEvict, contextShift: opts.contextShift, kvDtype: f.kvDtype === undefined ? undefined : opts.kvDtype, ...(template !== undefined ? { template } : {}), ...(f.system !== undefined ? { system: f.system } : {}) });
            session.dispose();
            session = loaded;
            out(`loaded ${session.stats.turns} turns from ${arg}\n`);
          } else throw new CokvError(`${command}: unknown command (${HELP})`, 'flag');
          continue;
        }
        answering = new AbortController();
        const gen = session.prompt(text, { ...decode, signal: answering.signal });
        try {
          for await (const chunk of gen) out(chunk.text);
          out('\n');
        } catch (e) {
          if (e instanceof CokvError && e.kind === 'aborted') out(' [cancelled]\n');
          else { out('\n'); throw e; }
        }
      } catch (e) {
        out(`error: ${errorLine(e)}\n`);
      } finally {
        answering = undefined;
      }
    }
  } finally {
    process.off('SIGINT', interrupt);
    rl.close();
    session.dispose();
  }
}
