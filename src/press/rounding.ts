/**
 * Round to the nearest integer, ties to the even one: what `torch.round` and Python's `round` do (the CoKV / AdaKV
 * reference code and kvpress round with them). `Math.round` sends every tie up, so it differs exactly at .5.
 */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
