/**
 * Where a prompt's segments start, in tokens: the `boundaries` that boundary-protecting presses keep (see
 * src/press/boundaries.ts). Text offsets are turned into token indices by encoding the text before them, which is
 * exact wherever no token spans the offset (chat templates put special tokens or newlines before each content) and
 * otherwise lands on the token that holds the offset's first character or the one after it.
 */

/** What the helpers need of a tokenizer (a Tokenizer, or a model in a worker thread through its `encode`). */
export interface BoundaryEncoder {
  /** Text to ids, with or without the tokenizer's own special tokens. */
  encode(text: string, addSpecial: boolean): number[] | Promise<number[]>;
  /** The BOS id, when the tokenizer has one. */
  readonly bosId: number | undefined;
}

/**
 * The token index in `ids` (a prompt encoded with `addSpecial`) at which text whose prefix encodes to `prefixIds`
 * continues: the prefix's length, plus one for a BOS the prompt starts with and the prefix lacks (an explicit BOS
 * put before the text), at most the prompt's last index.
 */
export function prefixTokenCount(prefixIds: readonly number[], ids: readonly number[], addSpecial: boolean, bosId: number | undefined): number {
  const bos = !addSpecial && bosId !== undefined && ids[0] === bosId && prefixIds[0] !== bosId ? 1 : 0;
  return Math.min(ids.length - 1, prefixIds.length + bos);
}

/**
 * Text offsets in `text` (a rendered chat) where each of `contents` starts, searched in order, each after the
 * previous match. A content the template changed (most trim it) is looked for trimmed; one still not found, or
 * empty, gives no offset (the later ones are still searched after the last match).
 */
export function contentOffsets(text: string, contents: readonly string[]): number[] {
  const out: number[] = [];
  let from = 0;
  for (const c of contents) {
    let at = c === '' ? -1 : text.indexOf(c, from);
    let length = c.length;
    if (at < 0) {
      const t = c.trim();
      if (t !== '') {
        at = text.indexOf(t, from);
        length = t.length;
      }
    }
    if (at < 0) continue;
    out.push(at);
    from = at + length;
  }
  return out;
}

/**
 * The boundaries of a chat prompt: 0 and the token index where each message's content starts in `text` (the
 * rendered template), ascending and without repeats. `ids` is `text` encoded with `addSpecial` (chat prompts: false,
 * the template writes BOS itself).
 */
export async function chatBoundaries(
  enc: BoundaryEncoder, text: string, contents: readonly string[], ids: readonly number[], addSpecial = false,
): Promise<number[]> {
  const out = [0];
  for (const at of contentOffsets(text, contents)) {
    if (at > 0) out.push(prefixTokenCount(await enc.encode(text.slice(0, at), addSpecial), ids, addSpecial, enc.bosId));
  }
  return [...new Set(out)].filter((b) => b < ids.length).sort((a, b) => a - b);
}
