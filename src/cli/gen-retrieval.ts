/** `cokv gen-retrieval`: seeded retrieval items (passkey, multikey, kv) in the format of retrieval-dev.jsonl. */
import type { Command } from 'commander';
import { GEN_MAX_LENGTH, GEN_MIN_LENGTH, GEN_TASKS, type GenTask } from '../eval/retrieval-gen.js';
import { generateRetrievalFile, retrievalFileSummary } from '../eval/retrieval-gen-run.js';
import { numberFlag } from './util.js';
import { numberList, stringList } from './lists.js';

interface GenRetrievalFlags {
  model: string;
  tasks: string;
  lengths: string;
  count: string;
  seed: string;
  dataDir: string;
  out: string;
}

export function registerGenRetrieval(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('gen-retrieval')
    .description('generate seeded passkey/multikey/kv items like retrieval-dev.jsonl from the held-out haystack (for cokv eval --dataset retrieval)')
    .requiredOption('--model <path>', 'model whose tokenizer defines the lengths (cokv-retrieval-tiny)')
    .option('--tasks <list>', `tasks: ${GEN_TASKS.join(', ')}`, GEN_TASKS.join(','))
    .option('--lengths <list>', `lengths in tokens (${GEN_MIN_LENGTH}–${GEN_MAX_LENGTH}; the dev items' rule)`, '512,1024,2048')
    .option('--count <n>', 'items per task and length', '60')
    .option('--seed <s>', 'generator seed (ids are gen-<task>-<length>-<seed>-<i>)', '1')
    .option('--data-dir <dir>', 'folder with needle/PaulGrahamEssays and longbench/multi_news.jsonl', '../shared/assets/data')
    .requiredOption('--out <file>', 'output JSONL file')
    .action((f: GenRetrievalFlags) => run(() => genRetrievalCommand(f)));
}

async function genRetrievalCommand(f: GenRetrievalFlags): Promise<void> {
  const tasks = stringList('--tasks', f.tasks, { allowed: GEN_TASKS, item: 'task' }) as GenTask[];
  const lengths = numberList('--lengths', f.lengths, { integer: true, min: GEN_MIN_LENGTH, max: GEN_MAX_LENGTH, item: 'length' });
  const count = numberFlag('--count', f.count, { integer: true, min: 1 })!;
  const seed = numberFlag('--seed', f.seed, { integer: true, min: 0, max: 2 ** 32 - 1 })!;
  const o = { model: f.model, tasks, lengths, count, seed, dataDir: f.dataDir, out: f.out };
  const items = await generateRetrievalFile(o);
  process.stdout.write(retrievalFileSummary(o, items) + '\n');
}
