/**
 * Players of the head game: the KV heads of the full-attention layers (sliding-window layers keep their window in
 * every coalition and are not players). Player id = row · kvHeads + kvHead, row-major like the CoKV code's
 * `layer*8 + kv_head`, where row is the layer's index among the player layers; names use the real layer index
 * (L5H0). For a model without sliding layers the rows are the layers, so ids are unchanged. A coalition is a 0/1
 * mask over the players.
 */
import { CokvError } from '../errors.js';
import { fullAttentionLayers, type ModelConfig } from '../model/config.js';

export type Coalition = Uint8Array;

/** The game's players on one model: which layers' KV heads play, and the id ↔ (layer, head) mapping. */
export class Players {
  /** Number of players. */
  readonly n: number;

  /** `layers`: the model layers whose KV heads are players, ascending. */
  constructor(readonly layers: readonly number[], readonly kvHeads: number) {
    this.n = layers.length * kvHeads;
  }

  /** The full-attention layers' KV heads of `c`. */
  static of(c: Pick<ModelConfig, 'layers' | 'numKvHeads'>): Players {
    return new Players(fullAttentionLayers(c), c.numKvHeads);
  }

  /** Like `of`, but a model with no full-attention layer has nothing to play for: a CokvError. */
  static require(c: Pick<ModelConfig, 'layers' | 'numKvHeads'>): Players {
    const p = Players.of(c);
    if (p.n === 0) {
      throw new CokvError(`the head game needs full-attention layers: all ${c.layers.length} layers of this model slide over a window (nothing to budget)`, 'flag');
    }
    return p;
  }

  /** Player id of (model layer, kvHead), or −1 when the layer is not a player layer. */
  id(layer: number, kvHead: number): number {
    const row = this.layers.indexOf(layer);
    return row < 0 ? -1 : row * this.kvHeads + kvHead;
  }

  /** Model layer of player `id`. */
  layerOf(id: number): number {
    return this.layers[Math.floor(id / this.kvHeads)];
  }

  name(id: number): string {
    return `L${this.layerOf(id)}H${id % this.kvHeads}`;
  }

  /**
   * [model layer][kvHead] booleans for the mask press over `numLayers` layers: members true, other players false;
   * rows of non-player (sliding) layers are all true, as nothing of theirs is masked.
   */
  grid(s: Coalition, numLayers: number): boolean[][] {
    const rows = Array.from({ length: numLayers }, () => new Array<boolean>(this.kvHeads).fill(true));
    this.layers.forEach((l, r) => { for (let h = 0; h < this.kvHeads; h++) rows[l][h] = s[r * this.kvHeads + h] === 1; });
    return rows;
  }
}

/** Player id with every layer a player layer (models without sliding layers); see {@link Players.id}. */
export function playerId(layer: number, kvHead: number, kvHeads: number): number {
  return layer * kvHeads + kvHead;
}

/** `L<layer>H<head>`; `layers` = the player layers (default: every layer, so row = layer). */
export function playerName(id: number, kvHeads: number, layers?: readonly number[]): string {
  const row = Math.floor(id / kvHeads);
  return `L${layers ? layers[row] : row}H${id % kvHeads}`;
}

export function complement(s: Coalition): Coalition {
  return s.map((x) => 1 - x);
}

/**
 * [layer][kvHead] booleans for the mask press; `playerLayers` = the layers whose heads are players (default every
 * layer); other layers' rows are all true (never masked).
 */
export function coalitionToGrid(s: Coalition, layers: number, kvHeads: number, playerLayers?: readonly number[]): boolean[][] {
  return new Players(playerLayers ?? Array.from({ length: layers }, (_, l) => l), kvHeads).grid(s, layers);
}

/** Hex string of a coalition mask (bit i = player i), compact for profile files. */
export function coalitionToHex(s: Coalition): string {
  let out = '';
  for (let i = 0; i < s.length; i += 4) {
    let nib = 0;
    for (let b = 0; b < 4 && i + b < s.length; b++) nib |= s[i + b] << b;
    out += nib.toString(16);
  }
  return out;
}

export function coalitionFromHex(hex: string, n: number): Coalition {
  const s = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const nib = parseInt(hex[i >> 2], 16);
    s[i] = (nib >> (i & 3)) & 1;
  }
  return s;
}
