import type { Tokenizer } from '../model/tokenizer/types.js';

/**
 * Turns generated ids into text pieces as they arrive. Decodes with one token of left context so SentencePiece
 * word-start spaces survive, holds back incomplete UTF-8 sequences, and finds stop strings (holding back any tail
 * that could still grow into one).
 */
export class TextStream {
  private ids: number[];
  private readonly contextText: string;
  private emitted = 0;
  private text = '';
  /** Set once a stop string is found: the text is cut before it. */
  stopped = false;

  constructor(private readonly tokenizer: Tokenizer, contextId: number | undefined, private readonly stops: string[]) {
    this.ids = contextId === undefined ? [] : [contextId];
    this.contextText = contextId === undefined ? '' : tokenizer.decode(this.ids, { skipSpecial: true });
  }

  /** Add one token; returns the text that can be shown now. */
  push(id: number): string {
    this.ids.push(id);
    const full = this.tokenizer.decode(this.ids, { skipSpecial: true });
    this.text = full.startsWith(this.contextText) ? full.slice(this.contextText.length) : full;
    let limit = this.text.length;
    if (this.text.endsWith('\uFFFD')) limit = this.text.length - 1;
    for (const s of this.stops) {
      const at = this.text.indexOf(s);
      if (at >= 0 && at < limit + s.length) {
        this.stopped = true;
        limit = Math.min(limit, at);
      }
    }
    if (!this.stopped) {
      for (const s of this.stops) {
        for (let k = Math.min(s.length - 1, limit); k > 0; k--) {
          if (this.text.endsWith(s.slice(0, k))) { limit = Math.min(limit, this.text.length - k); break; }
        }
      }
    }
    if (limit <= this.emitted) return '';
    const piece = this.text.slice(this.emitted, limit);
    this.emitted = limit;
    return piece;
  }

  /** Whatever was held back, at the end of generation. */
  flush(): string {
    if (this.stopped) return '';
    const piece = this.text.slice(this.emitted);
    this.emitted = this.text.length;
    return piece;
  }
}
