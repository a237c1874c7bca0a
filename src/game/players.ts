/**
 * Players of the head game: every (layer, KV head) pair, id = layer · kvHeads + kvHead (row-major, like the CoKV
 * code's `layer*8 + kv_head`). A coalition is a 0/1 mask over the players.
 */
export type Coalition = Uint8Array;

export function playerId(layer: number, kvHead: number, kvHeads: number): number {
  return layer * kvHeads + kvHead;
}

export function playerName(id: number, kvHeads: number): string {
  return `L${Math.floor(id / kvHeads)}H${id % kvHeads}`;
}

export function complement(s: Coalition): Coalition {
  return s.map((x) => 1 - x);
}

/** [layer][kvHead] booleans for the mask press. */
export function coalitionToGrid(s: Coalition, layers: number, kvHeads: number): boolean[][] {
  return Array.from({ length: layers }, (_, l) => Array.from({ length: kvHeads }, (_, h) => s[l * kvHeads + h] === 1));
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
