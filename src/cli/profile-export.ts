/**
 * `cokv profile export <profile.json> --model M --format kvpress|attention-matching|duo|csv --out FILE`: write a
 * profile's head values in a format another KV-cache tool reads (see src/game/profile-export.ts for each format).
 */
import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { openModel } from '../model/load.js';
import { bindModelSource } from '../model/fingerprint.js';
import { fullAttentionLayers } from '../model/config.js';
import { readProfileValues } from '../press/head-values.js';
import { defaultAlpha } from '../press/registry.js';
import { DEFAULT_WINDOW } from '../press/options.js';
import { checkOutputFile, writeFileAtomic } from '../util/files.js';
import { EXPORT_FORMATS, KVPRESS_ROWS, exportProfile, type ExportFormat } from '../game/profile-export.js';
import { numberFlag } from './util.js';

interface ExportFlags {
  model: string;
  format: string;
  out: string;
  length?: string;
  window?: string;
  alpha?: string;
  force?: boolean;
}

type Run = (fn: () => Promise<void>) => Promise<void>;

/** Default nominal prompt length of the kvpress table. */
export const DEFAULT_EXPORT_LENGTH = 1024;

/** The formats and the kvpress budget rule, printed after the options in `--help`. */
const FORMATS_TEXT = `
Formats (layers = the model's full-attention layers, numbered as in the model; sliding-window layers are never
budgeted, so they have no row):
  kvpress             the table kvpress's LUKVPress loads: .npy float32 [99, layers, KV heads]. Row r = compression
                      ratio (r+1)% (kvpress's fraction removed); entry = that head's prune ratio 1 − kept/length,
                      kept = the CoKV allocation at keep rate (99 − r)% of --length tokens:
                        budget per head = keep rate × length: T = round(keep × length × heads) tokens in all
                        (half to even); every head keeps max(1, min(window, ⌊T/heads⌋)) (kvpress keeps ≥ 1 per
                        head); the rest is shared in proportion to max(0, value − the α-th smallest value), integer
                        counts by largest-remainder rounding, no head above length; divided back by length.
  attention-matching  Attention Matching's head budgets: JSON {"L<layer>H<kv head>": share}, share = value clipped at
                      0 divided by the sum (equal shares if no value is positive); the shares sum to 1
  duo                 DuoAttention's full_attention_heads.tsv: one row per layer, one tab-separated column per KV
                      head, value clipped at 0 divided by the largest (its loader also reads sink_size and
                      recent_size from a config.json beside it, which cokv does not write)
  csv                 layer,kv_head,value,rank (rank 1 = the largest value)
`;

/** Add `export` to the `cokv profile` command; `run` reports CokvErrors as one line and exit 1 (see main.ts). */
export function registerProfileExport(profileCmd: Command, run: Run): void {
  profileCmd
    .command('export')
    .description('write a profile\'s head values for other tools: kvpress (LUKVPress table), Attention Matching, DuoAttention, CSV')
    .argument('<profile>', 'profile JSON (made by cokv profile)')
    .requiredOption('--model <path>', 'the model the profile was made for (its shape and weights are checked)')
    .requiredOption('--format <f>', `${EXPORT_FORMATS.join(', ')} (see Formats below)`)
    .requiredOption('--out <file>', 'output file (written atomically)')
    .option('--length <n>', `kvpress: nominal prompt length the integer budgets are computed for (default ${DEFAULT_EXPORT_LENGTH}); kvpress rescales the rates to the real prompt`)
    .option('--window <w>', `kvpress: tokens every head keeps before the CoKV share (default ${DEFAULT_WINDOW}, the presses' window)`)
    .option('--alpha <a>', 'kvpress: CoKV α, lowest-valued heads that keep only the window (default: the cokv press\'s, 10 of 256 players scaled to the model)')
    .option('--force', 'replace --out if it exists')
    .addHelpText('after', FORMATS_TEXT)
    .action((file: string, f: ExportFlags) => run(() => profileExport(file, f)));
}

/** Refuse before any work: the folder must exist; the path must be absent (or `force`) and a regular file. */
function checkOut(out: string, force: boolean): void {
  const st = checkOutputFile(out);
  if (st && !force) throw new CokvError(`--out ${out}: already exists (use --force to replace it)`, 'file');
}

/** The command itself (exported for tests that drive it without the CLI). */
export async function profileExport(file: string, f: ExportFlags): Promise<void> {
  if (!(EXPORT_FORMATS as readonly string[]).includes(f.format)) {
    throw new CokvError(`--format: '${f.format}' is not one of ${EXPORT_FORMATS.join(', ')}`, 'flag');
  }
  const format = f.format as ExportFormat;
  if (format !== 'kvpress') {
    const given = (['length', 'window', 'alpha'] as const).find((k) => f[k] !== undefined);
    if (given) throw new CokvError(`--${given}: applies to --format kvpress only (the ${format} export has no budgets)`, 'flag');
  }
  const length = numberFlag('--length', f.length, { integer: true, min: 1 }) ?? DEFAULT_EXPORT_LENGTH;
  const window = numberFlag('--window', f.window, { integer: true, min: 0 }) ?? DEFAULT_WINDOW;
  const alphaFlag = numberFlag('--alpha', f.alpha, { integer: true, min: 0 });
  checkOut(f.out, f.force ?? false);
  const src = await openModel(f.model);
  const config = src.config;
  bindModelSource(config, src.path);
  const layers = fullAttentionLayers(config);
  if (layers.length === 0) throw new CokvError(`--model ${f.model}: has no full-attention layer, so no KV head is budgeted`, 'format');
  // Checks the profile's fingerprint (shape and weights) and players (the full-attention layers) against the model.
  const values = readProfileValues(file, config);
  const alpha = alphaFlag ?? defaultAlpha(config);
  const v = { values, layers, numKvHeads: config.numKvHeads };
  const data = exportProfile(format, v, { length, window, alpha });
  writeFileAtomic(f.out, data, { what: '--out', overwrite: f.force ?? false });
  const sliding = config.numLayers - layers.length;
  const rows = sliding > 0
    ? `${layers.length} full-attention layers of ${config.numLayers} (layers ${layers.join(',')}; the ${sliding} sliding-window layers are not budgeted${format === 'kvpress' ? ', and kvpress\'s stock LUKVPress expects one row per model layer: load it with tools/kvpress\'s CoKVTablePress' : ''})`
    : `${layers.length} layers`;
  const what = format === 'kvpress'
    ? `kvpress LUKVPress table [${KVPRESS_ROWS}, ${layers.length}, ${config.numKvHeads}] (compression ratios 1%…99% of ${length} tokens, window ${window}, α ${alpha})`
    : `${format} values of ${layers.length}×${config.numKvHeads} KV heads`;
  process.stderr.write(`${what}, ${rows} → ${f.out}\n`);
}
