/** `cokv serve`: the OpenAI-compatible HTTP server (src/server) on one model, until SIGINT or SIGTERM. */
import path from 'node:path';
import type { Command } from 'commander';
import { CokvError, sanitize, systemErrorLine } from '../errors.js';
import { loadModelWorker } from '../session/remote-model.js';
import { createCokvServer } from '../server/server.js';
import { KV_DTYPE_HELP, kvDtypeFlag, numberFlag } from './util.js';
import type { PressOptions } from '../press/options.js';
import { resolvePress } from '../press/registry.js';
import { addPressFlags, pressOptionsFromFlags, type PressFlags } from './press-flags.js';
import { checkPrefillEvictFlags, PREFILL_EVICT_HELP } from './generate.js';

interface ServeFlags extends PressFlags {
  model: string;
  modelName?: string;
  port: string;
  host: string;
  apiKey?: string;
  queue: string;
  maxBody: string;
  kvDtype?: string;
  prefixCache: string;
  prefixCacheMb: string;
  prefillEvict?: boolean;
}

export function registerServe(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const cmd = program
    .command('serve')
    .description('serve the model over an OpenAI-compatible HTTP API (/v1/models, /v1/completions, /v1/chat/completions)')
    .requiredOption('--model <path>', 'GGUF file, Hugging Face folder, or llama2.c checkpoint')
    .option('--model-name <id>', 'the model id clients send and /v1/models lists (default: the file or folder name)')
    .option('--port <n>', 'TCP port (0 = pick a free one)', '8080')
    .option('--host <addr>', 'address to bind (the default serves this machine only)', '127.0.0.1')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" (default: $COKV_API_KEY, else no key)')
    .option('--queue <n>', 'requests that may wait behind the running one; more are answered 429', '16')
    .option('--max-body <bytes>', 'largest request body accepted', String(8 << 20))
    .option('--kv-dtype <t>', `${KV_DTYPE_HELP} (default for requests)`, 'f16')
    .option('--prefix-cache <n>', 'finished sequences kept so a request extending one (the next turn) prefills only its new tokens; 0 = off', '4')
    .option('--prefix-cache-mb <n>', 'most MiB those kept sequences may hold together', '512')
    .option('--prefill-evict', `${PREFILL_EVICT_HELP}; the default for requests with a press (a request's "cokv": {"prefill_evict": false} turns it off)`);
  addPressFlags(cmd).action((flags: ServeFlags, command: Command) => {
    const defaulted = new Set(Object.keys(flags).filter((k) => command.getOptionValueSource(k) === 'default'));
    return run(() => serveCommand(flags, defaulted));
  });
}

/**
 * The server's default press options: the flags given. Options only defaulted (--window 8, --pool max, …) are left
 * out, so that a request's `cokv.preset` brings its own defaults for them (the press falls back to the same values
 * without one), as `--preset` does on the command line.
 */
function givenPressOptions(f: ServeFlags, defaulted: ReadonlySet<string>): PressOptions {
  const o = pressOptionsFromFlags(f);
  for (const k of Object.keys(o) as (keyof PressOptions)[]) if (defaulted.has(k) || o[k] === undefined) delete o[k];
  return o;
}

async function serveCommand(f: ServeFlags, defaulted: ReadonlySet<string>): Promise<void> {
  const port = numberFlag('--port', f.port, { integer: true, min: 0, max: 65535 })!;
  const queue = numberFlag('--queue', f.queue, { integer: true, min: 0 })!;
  const maxBody = numberFlag('--max-body', f.maxBody, { integer: true, min: 1 })!;
  const kvDtype = kvDtypeFlag(f.kvDtype);
  const prefixCache = numberFlag('--prefix-cache', f.prefixCache, { integer: true, min: 0 })!;
  const prefixCacheBytes = numberFlag('--prefix-cache-mb', f.prefixCacheMb, { min: 0 })! * 2 ** 20;
  checkPrefillEvictFlags(f);
  // The press flags' own values (--protect 2, --preset nope, --budget x) are refused before the model loads.
  const pressOptions = givenPressOptions(f, defaulted);
  // An environment variable keeps the key out of `ps` listings.
  const apiKey = f.apiKey ?? (process.env.COKV_API_KEY || undefined);
  if (apiKey !== undefined && apiKey.trim() === '') throw new CokvError('--api-key: the key is empty', 'flag');
  // The model runs in a worker thread: requests' inference never blocks the server's event loop.
  const model = await loadModelWorker(f.model);
  // Build the default press once now so a bad --press/--budget/--profile stops the server before it listens.
  resolvePress(f.press ?? 'full', pressOptions, model.config);
  const modelId = f.modelName ?? path.basename(path.resolve(f.model));
  const log = (line: string): void => { process.stderr.write(`cokv: ${line}\n`); };
  const { server, close } = createCokvServer({
    model, modelId, apiKey, queue, maxBody, kvDtype, log, prefixCache, prefixCacheBytes, prefillEvict: f.prefillEvict === true,
    press: { name: f.press ?? 'full', options: pressOptions },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new CokvError(`--host ${f.host} --port ${port}: cannot listen (${systemErrorLine(e) ?? sanitize(e.message)})`, 'flag')));
    server.listen(port, f.host, () => resolve());
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  const host = f.host.includes(':') ? `[${f.host}]` : f.host;
  process.stdout.write(`cokv: serving ${modelId} at http://${host}:${bound}/v1\n`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      log(`${sig}: stopping (queued and running requests are cancelled)`);
      void close().then(() => model.dispose()).then(resolve);
    };
    const onInt = (): void => stop('SIGINT');
    const onTerm = (): void => stop('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
}
