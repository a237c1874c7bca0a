/**
 * Generate a retrieval item file (what `cokv gen-retrieval` does): seeded passkey/multikey/kv items for every task ×
 * length, in the format of retrieval-dev.jsonl, from the held-out haystack. Errors name the command-line flag
 * they are about (`--out …`, `--data-dir …`, `--lengths: …`).
 */
import fs from 'node:fs';
import { CokvError } from '../errors.js';
import { openModel } from '../model/load.js';
import { generateRetrievalItems, readHeldOutHaystack, writeRetrievalItems, type GenTask, type RetrievalGenItem } from './retrieval-gen.js';

export interface RetrievalFileOptions {
  /** Model whose tokenizer defines the lengths (cokv-retrieval-tiny). */
  model: string;
  tasks: GenTask[];
  /** Lengths in tokens (GEN_MIN_LENGTH–GEN_MAX_LENGTH), each within the model's context. */
  lengths: number[];
  /** Items per task and length. */
  count: number;
  /** Generator seed (ids are gen-<task>-<length>-<seed>-<i>). */
  seed: number;
  /** Folder with needle/PaulGrahamEssays and longbench/multi_news.jsonl. */
  dataDir: string;
  /** Output JSONL file. */
  out: string;
}

/** Write the items of `o` to `o.out`; returns how many. */
export async function generateRetrievalFile(o: RetrievalFileOptions): Promise<number> {
  if (fs.existsSync(o.out) && fs.statSync(o.out).isDirectory()) throw new CokvError(`--out ${o.out}: is a folder, not a file`, 'file');
  if (!fs.existsSync(o.dataDir) || !fs.statSync(o.dataDir).isDirectory()) throw new CokvError(`--data-dir ${o.dataDir}: no such folder`, 'file');
  const source = await openModel(o.model);
  for (const L of o.lengths) {
    if (L > source.config.contextLength) throw new CokvError(`--lengths: ${L} exceeds the model's context of ${source.config.contextLength}`, 'flag');
  }
  const tokenizer = await source.loadTokenizer();
  const haystack = readHeldOutHaystack(o.dataDir);
  const items: RetrievalGenItem[] = [];
  for (const task of o.tasks) for (const length of o.lengths) items.push(...generateRetrievalItems({ task, length, count: o.count, seed: o.seed, tokenizer, haystack }));
  writeRetrievalItems(o.out, items);
  return items.length;
}

/** The line `cokv gen-retrieval` prints when done. */
export function retrievalFileSummary(o: RetrievalFileOptions, items: number): string {
  return `${items} items (${o.tasks.join(',')} × ${o.lengths.join(',')} × ${o.count}, seed ${o.seed}) → ${o.out}`;
}
