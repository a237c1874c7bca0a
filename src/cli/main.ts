/**
 * `cokv` command line. Exit codes: 0 success, 1 user error (bad file, flag or prompt: one line on stderr),
 * 2 internal error (stack trace with --verbose).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { CokvError, sanitize, systemErrorLine } from '../errors.js';
import { BACKEND_KINDS, onBackendFallback } from '../backend/select.js';
import { registerGenerate } from './generate.js';
import { registerInspect } from './inspect.js';
import { registerScore } from './score.js';
import { registerProfile } from './profile.js';
import { registerEval } from './eval.js';
import { registerNeedle } from './needle.js';
import { registerBench } from './bench.js';
import { registerExperiment } from './experiment.js';
import { registerHeadScores } from './head-scores.js';
import { registerReport } from './report.js';
import { registerGenRetrieval } from './gen-retrieval.js';
import { registerServe } from './serve.js';
import { registerChat } from './chat.js';
import { flagWording } from './flag-names.js';
import { addExamples } from './examples.js';

/** The version in package.json (the same relative path from src/cli and dist/cli). */
function packageVersion(): string {
  try {
    const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../package.json');
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

let outputGuarded = false;

/**
 * Writes to a closed pipe (`cokv … | head`) or a full device (`> /dev/full`) surface as 'error' events on
 * stdout; without a listener Node prints a stack trace. A closed pipe ends quietly, anything else is one line.
 */
function guardOutput(): void {
  if (outputGuarded) return;
  outputGuarded = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') {
      try {
        process.stderr.write(`cokv: standard output: ${systemErrorLine(err) ?? sanitize(err.message)}\n`);
      } catch {
        // stderr is gone too: nothing left to tell
      }
    }
    process.exit(err.code === 'EPIPE' ? 0 : 1);
  });
}

let fallbackWarned = false;

export async function main(argv: string[]): Promise<number> {
  guardOutput();
  // 'auto' falling back to wasm/ts: one stderr line (why, how much slower), once per process, not per model load.
  if (!fallbackWarned) {
    fallbackWarned = true;
    onBackendFallback((s) => process.stderr.write(`cokv: warning: ${sanitize(s.warning ?? '')}\n`));
  }
  const verbose = argv.includes('--verbose');
  let args = argv.filter((a) => a !== '--verbose');
  // --backend applies to every command that loads a model; it travels as COKV_BACKEND (child processes too).
  const b = args.indexOf('--backend');
  if (b >= 0) {
    const kind = args[b + 1];
    if (kind === undefined || !(BACKEND_KINDS as readonly string[]).includes(kind)) {
      process.stderr.write(`cokv: --backend: '${kind ?? ''}' must be one of ${BACKEND_KINDS.join(', ')}\n`);
      return 1;
    }
    process.env.COKV_BACKEND = kind;
    args = [...args.slice(0, b), ...args.slice(b + 2)];
  }
  let exitCode = 0;
  const run = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      const sys = systemErrorLine(err);
      if (err instanceof CokvError || sys) {
        process.stderr.write(`cokv: ${sys ?? flagWording((err as CokvError).message)}\n`);
        if (verbose && err instanceof Error) process.stderr.write(`${err.stack}\n`);
        exitCode = 1;
      } else {
        const msg = sanitize(err instanceof Error ? err.message : String(err));
        process.stderr.write(`cokv: internal error: ${msg}${verbose ? '' : ' (run with --verbose for details)'}\n`);
        if (verbose && err instanceof Error) process.stderr.write(`${err.stack}\n`);
        exitCode = 2;
      }
    }
  };
  const program = new Command();
  program
    .name('cokv')
    .description('Long-context LLM inference with a per-head KV cache budgeted by a cooperative game')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('--verbose', 'print stack traces for errors')
    .option('--backend <kind>', `kernels: ${BACKEND_KINDS.join(', ')} (auto = native if built, else wasm, else ts)`)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerGenerate(program, run);
  registerInspect(program, run);
  registerScore(program, run);
  registerProfile(program, run);
  registerEval(program, run);
  registerNeedle(program, run);
  registerBench(program, run);
  registerExperiment(program, run);
  registerHeadScores(program, run);
  registerReport(program, run);
  registerGenRetrieval(program, run);
  registerServe(program, run);
  registerChat(program, run);
  addExamples(program);
  const override = (cmd: Command): void => { cmd.exitOverride(); cmd.commands.forEach(override); };
  program.commands.forEach(override);
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed by commander.
      return err.exitCode === 0 ? 0 : 1;
    }
    throw err;
  }
  return exitCode;
}
