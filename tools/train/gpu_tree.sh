#!/bin/bash
# What the device tool's `run` would send, and how to bring it under its 64 MiB limit for a training run.
# The tool sends the working tree (tracked files present on disk, untracked files git does not ignore) plus the
# paths named in `carry`; this repository's tracked files are ~85 MB, 25 MB of them one test fixture
# (test/fixtures/models/smollm2-2l) and 12 MB the committed results (results/), none of which a training run reads.
#
#   bash tools/train/gpu_tree.sh size [CARRIED...]   bytes that would travel (with the carried paths)
#   bash tools/train/gpu_tree.sh aside               move those two folders to ../cokv-gpu-aside (outside the tree)
#   bash tools/train/gpu_tree.sh restore             move them back; fails loudly if git then sees a file missing
#
# Nothing is deleted: `aside` refuses when ../cokv-gpu-aside already holds a copy, `restore` refuses to overwrite.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
ASIDE=../cokv-gpu-aside
BIG=(test/fixtures/models/smollm2-2l results)
LIMIT=$((64 * 1024 * 1024))

bytes_of() { # NUL-separated paths on stdin -> total bytes of the regular files among them
  xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

case "${1:-}" in
  size)
    shift
    tracked=$(git ls-files -z | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done | bytes_of)
    untracked=$(git ls-files -z --others --exclude-standard | bytes_of)
    carried=0
    for p in "$@"; do
      [ -e "$p" ] || { echo "gpu_tree.sh: carried path $p does not exist" >&2; exit 1; }
      carried=$((carried + $(find "$p" -type f -print0 | bytes_of)))
    done
    total=$((tracked + untracked + carried))
    awk -v t="$tracked" -v u="$untracked" -v c="$carried" -v l=$((LIMIT / 1048576)) \
      'BEGIN { printf "tracked %d, untracked %d, carried %d bytes: %.1f MiB of %d MiB\n", t, u, c, (t + u + c) / 1048576, l }'
    [ "$total" -le "$LIMIT" ] || { echo "gpu_tree.sh: over the limit; run 'bash tools/train/gpu_tree.sh aside' first" >&2; exit 1; }
    ;;
  aside)
    [ -e "$ASIDE" ] && { echo "gpu_tree.sh: $ASIDE exists (an earlier 'aside' not restored?); run 'restore' first" >&2; exit 1; }
    mkdir -p "$ASIDE"
    for d in "${BIG[@]}"; do mkdir -p "$ASIDE/$(dirname "$d")"; mv "$d" "$ASIDE/$d"; done
    echo "moved ${BIG[*]} to $ASIDE; 'bash tools/train/gpu_tree.sh restore' puts them back"
    ;;
  restore)
    [ -d "$ASIDE" ] || { echo "gpu_tree.sh: nothing to restore ($ASIDE not found)" >&2; exit 1; }
    for d in "${BIG[@]}"; do
      [ -e "$d" ] && { echo "gpu_tree.sh: $d exists in the tree; not overwriting it (compare it with $ASIDE/$d)" >&2; exit 1; }
    done
    for d in "${BIG[@]}"; do mkdir -p "$(dirname "$d")"; mv "$ASIDE/$d" "$d"; done
    rm -rf "$ASIDE"
    missing=$(git ls-files --deleted | head -5)
    [ -z "$missing" ] || { echo "gpu_tree.sh: git sees tracked files missing after restore: $missing (git checkout -- PATH brings them back)" >&2; exit 1; }
    echo "restored ${BIG[*]}"
    ;;
  *)
    echo "usage: bash tools/train/gpu_tree.sh size [CARRIED...] | aside | restore" >&2; exit 1 ;;
esac
