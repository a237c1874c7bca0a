import type { Command } from 'commander';
import { CokvError } from '../errors.js';
import { datasetInfo } from '../eval/datasets.js';
import { optionalStringArrayField, readJsonl, stringArrayField, stringField, where } from '../eval/jsonl.js';
import { aggregateScores, scoreSample } from '../eval/metrics.js';

interface ScoreFlags {
  dataset: string;
  predictions: string;
  skipBadLines?: boolean;
}

export function registerScore(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('score')
    .description('score predictions with the dataset\'s LongBench (or suite) metric; prints one JSON object')
    .requiredOption('--dataset <name>', 'dataset name (a LongBench English task, retrieval, ruler, longeval, stories)')
    .requiredOption('--predictions <file>', 'JSONL: prediction (or pred), answers, optional all_classes per line')
    .option('--skip-bad-lines', 'skip malformed JSON lines with a warning instead of stopping')
    .action((flags: ScoreFlags) => run(async () => scoreCommand(flags)));
}

function scoreCommand(f: ScoreFlags): void {
  const info = datasetInfo(f.dataset);
  const file = f.predictions;
  const records = readJsonl(file, { onBadLine: f.skipBadLines ? 'skip' : 'error' });
  if (records.length === 0) throw new CokvError(`${file}: no predictions`, 'format');
  const scores: number[] = [];
  for (const rec of records) {
    const field = rec.value.prediction === undefined && rec.value.pred !== undefined ? 'pred' : 'prediction';
    const prediction = stringField(rec, field, file);
    const answers = stringArrayField(rec, 'answers', file);
    const cls = optionalStringArrayField(rec, 'all_classes', file);
    if (info.metric === 'classification' && cls === null) {
      throw new CokvError(`${where(file, rec)}: missing field 'all_classes' (needed by ${f.dataset})`, 'format');
    }
    try {
      scores.push(scoreSample(f.dataset, prediction, answers, cls));
    } catch (err) {
      if (err instanceof CokvError) throw new CokvError(`${where(file, rec)}: ${err.message}`, err.kind);
      throw err;
    }
  }
  const out = { dataset: f.dataset, n: scores.length, score: aggregateScores(scores), scores };
  process.stdout.write(JSON.stringify(out) + '\n');
}
