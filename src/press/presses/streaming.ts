/** StreamingLLM (Xiao et al. 2024): the first `sink` tokens and the most recent ones, whatever the attention. */
import { definePress } from './descriptor.js';
import { SCORED_OPTIONS, scoredPress, streamingScorer, uniformScored } from './scored.js';

const options = { ...SCORED_OPTIONS, sink: 4 } as const;

export const streaming = definePress({
  name: 'streaming',
  label: 'StreamingLLM',
  description: 'keeps the first `sink` tokens and the most recent ones, the same count in every head',
  role: 'baseline',
  allocation: 'uniform',
  options,
  requires: [],
  sweep: true,
  build: (config, o) => scoredPress('streaming', streamingScorer(o.sink ?? options.sink), uniformScored(), o, config),
});
