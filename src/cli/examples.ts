/**
 * The "Examples:" block at the end of every command's `--help`: 1–3 invocations on the bundled models
 * (../shared/assets, as in README.md), keyed by the command's path (`profile run`, `eval merge`, …). main.ts
 * attaches them after every command is registered; test/cli-help.test.ts checks every command has one.
 */
import type { Command } from 'commander';

const TINY = '../shared/assets/models/cokv-retrieval-tiny';
const STORIES = '../shared/assets/models/stories260K';
const DEV = '../shared/assets/data/retrieval-dev.jsonl';
const HAYSTACK = '../shared/assets/data/needle/PaulGrahamEssays';
const CHAT_MODEL = 'test/fixtures/models/llama3-tiny/hf-bf16';

const GENERATE = [
  `cokv generate --model ${STORIES} --prompt "Once upon a time" --max-tokens 40 --temperature 0`,
  `cokv generate --model ${TINY}/cokv-retrieval-tiny-q8_0.gguf --prompt "The pass key is 4213. The pass key is" --max-tokens 6 --press snapkv --budget 16 --json`,
  `cokv generate --model ${STORIES} --prompt "Lily saw a cat" --max-tokens 32 --temperature 0.8 --top-p 0.9 --seed 1`,
];
const PROFILE_RUN = [
  `cokv profile --model ${TINY} --data ${DEV} --task retrieval --subset passkey --limit 2 --samples 8 --out profile.json`,
  `cokv profile --model ${TINY} --data ${DEV} --task retrieval --subset passkey --limit 2 --samples 16 --resume --out profile.json   # more samples, same file`,
];
const PROFILE_SHARDS = [
  `cokv profile --model ${TINY} --data ${DEV} --task retrieval --limit 2 --samples 8 --tolerance 0 --shard 0/2 --out shard-0.json`,
  `cokv profile --model ${TINY} --data ${DEV} --task retrieval --limit 2 --samples 8 --tolerance 0 --shard 1/2 --out shard-1.json`,
  'cokv profile merge shard-0.json shard-1.json --out merged.json',
];
const EVAL_RUN = [
  `cokv eval --model ${TINY} --data ${DEV} --dataset retrieval --subset passkey --lengths 512 --limit 4 --presses full,snapkv --budgets 16,32 --out runs/`,
  `cokv eval --model ${TINY} --data ${DEV} --dataset retrieval --subset passkey --lengths 512 --limit 4 --presses cokv --budgets 16 --profile profile.json --out runs/`,
];
const EVAL_SHARDS = [
  `cokv eval --model ${TINY} --data ${DEV} --dataset retrieval --subset passkey --lengths 512 --limit 4 --presses full,snapkv --budgets 16 --shard 0/2 --out eval-shard-0`,
  `cokv eval --model ${TINY} --data ${DEV} --dataset retrieval --subset passkey --lengths 512 --limit 4 --presses full,snapkv --budgets 16 --shard 1/2 --out eval-shard-1`,
  'cokv eval merge eval-shard-0 eval-shard-1 --out eval-merged',
];

export const EXAMPLES: Record<string, string[]> = {
  '': [
    `cokv generate --model ${STORIES} --prompt "Once upon a time" --max-tokens 40`,
    `cokv inspect ${TINY}`,
    'cokv experiment all --quick --quiet --out /tmp/results',
  ],
  generate: GENERATE,
  inspect: [`cokv inspect ${TINY}/cokv-retrieval-tiny-q8_0.gguf`, `cokv inspect ${STORIES} --json`],
  score: [
    `cokv score --dataset retrieval --predictions runs/retrieval__cokv-retrieval-tiny__full__full__f16/predictions.jsonl   # a folder cokv eval wrote`,
  ],
  profile: [PROFILE_RUN[0], 'cokv profile show profile.json', PROFILE_SHARDS[2]],
  'profile run': [...PROFILE_RUN, PROFILE_SHARDS[0]],
  'profile merge': PROFILE_SHARDS,
  'profile export': [
    `cokv profile export results/profiles/cokv-retrieval-tiny__metric.json --model ${TINY} --format kvpress --out table.npy`,
    `cokv profile export results/profiles/cokv-retrieval-tiny__metric.json --model ${TINY} --format csv --out values.csv --force`,
  ],
  'profile show': ['cokv profile show profile.json', 'cokv profile show profile.json --json'],
  'profile compare': ['cokv profile compare profile.json merged.json'],
  eval: [EVAL_RUN[0], EVAL_SHARDS[2]],
  'eval run': [...EVAL_RUN, EVAL_SHARDS[0]],
  'eval merge': EVAL_SHARDS,
  needle: [
    `cokv needle --model ${TINY} --haystack ${HAYSTACK} --lengths 512 --depths 3 --presses full,snapkv --budgets 32 --out runs/`,
  ],
  bench: [
    `cokv bench --model ${TINY} --lengths 512,1024 --presses full,snapkv --budgets 64`,
    `cokv bench --model ${STORIES} --lengths 256 --presses full,streaming --budgets 32 --decode 8 --json`,
  ],
  experiment: [
    'cokv experiment all --quick --quiet --out /tmp/results',
    'cokv experiment profiles --quick --out /tmp/results',
  ],
  'head-scores': [
    `cokv head-scores --model ${TINY} --haystack ${HAYSTACK} --length 512 --samples 3 --out head-scores.json`,
    `cokv head-scores --method copy --model ${TINY} --haystack ${HAYSTACK} --samples 2 --out copy-scores.json`,
  ],
  report: ['cokv report runs/ --out report.html', 'cokv report /tmp/results   # the folder cokv experiment all --quick --out /tmp/results wrote'],
  'gen-retrieval': [`cokv gen-retrieval --model ${TINY} --tasks passkey --lengths 512 --count 4 --seed 1 --out gen.jsonl`],
  serve: [
    `cokv serve --model ${STORIES} --port 8080`,
    `cokv serve --model ${TINY} --port 0 --press snapkv --budget 64`,
  ],
  chat: [
    `cokv chat --model ${CHAT_MODEL} --system "Be brief." --max-tokens 32`,
    `cokv chat --model ${CHAT_MODEL} --press snapkv --budget 64 --max-history 128`,
  ],
};

/** A command's path below the program: '' for cokv itself, 'profile run' for `cokv profile run`. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Add the Examples block to `program` and every command below it that has one. */
export function addExamples(program: Command): void {
  const visit = (cmd: Command): void => {
    const ex = EXAMPLES[commandPath(cmd)];
    if (ex) cmd.addHelpText('after', `\nExamples:\n${ex.map((e) => `  $ ${e}`).join('\n')}\n`);
    cmd.commands.forEach(visit);
  };
  visit(program);
}
