/**
 * The child process of runBench (src/eval/bench-run.ts): measures the one configuration given as JSON in argv[2]
 * and prints its row as one JSON line; on failure one `cokv: …` line on stderr and exit 1.
 */
import { benchConfig, type BenchConfig } from './bench-run.js';

(async () => benchConfig(JSON.parse(process.argv[2] ?? '') as BenchConfig))().then(
  (row) => { process.stdout.write(JSON.stringify(row) + '\n'); },
  (err: unknown) => {
    process.stderr.write(`cokv: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
