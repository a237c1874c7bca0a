/** What the engine needs from a tokenizer, whatever file it came from. */
export interface Tokenizer {
  readonly vocabSize: number;
  /** Beginning-of-sequence id, if the model uses one. */
  readonly bosId: number | undefined;
  /** Ids that end generation (EOS and, for chat models, end-of-turn tokens). */
  readonly eosIds: number[];
  /** Whether `encode` should add BOS by default (tokenizer's own rule: add_bos_token / post-processor). */
  readonly addBosDefault: boolean;
  /**
   * Text to ids. `addSpecial` adds BOS (and whatever the tokenizer's post-processor adds) when true;
   * defaults to the tokenizer's own rule.
   */
  encode(text: string, opts?: { addSpecial?: boolean }): number[];
  /** Ids to text. `skipSpecial` drops control tokens such as BOS/EOS (default true). */
  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string;
  /** The raw piece of one token (for debugging and stop-string checks). */
  tokenText(id: number): string;
}
