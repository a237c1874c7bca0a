#!/usr/bin/env bash
# Builds and runs bench/qgemv-vs-ggml.c: cokv's GEMV kernels against llama.cpp's (ggml's) in one process.
# Usage: bench/qgemv-vs-ggml.sh [--before REV|DIR] [binary options: --rounds N --threads 1,2 --mode cold|hot|both
#        --engines cokv-before,cokv,ggml,ggml-repack,memread --shapes k|q32|q4_k:2048x2048,q8_0:896x896,...]
# (types q4_0 q5_0 q8_0 iq4_nl q4_k q5_k q6_k; `k`: the K-type list, `q32`: Q8_0/Q5_0/Q4_0 at the Qwen2.5-0.5B and
# Llama-3.2-1B shapes; ggml-repack runs where llama.cpp repacks the type on AVX2: Q4_0, Q4_K, IQ4_NL).
# LLAMA_CPP (default /tmp/llama.cpp) must hold a CMake build in build/ (libggml*.so in build/bin); COKV_CFLAGS adds
# compiler flags for the current kernels (e.g. -DPF_GROUPS=0 to try a tuning macro), BEFORE_CFLAGS for the others
# (--before: a git revision, or a folder holding copies of native/*.c|h).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
L=${LLAMA_CPP:-/tmp/llama.cpp}
if [ ! -f "$L/build/bin/libggml-cpu.so" ]; then
  echo "qgemv-vs-ggml.sh: no llama.cpp build at $L/build/bin (set LLAMA_CPP; see ../shared/docs/llamacpp-tools.md)" >&2
  exit 1
fi
before=""
if [ "${1:-}" = "--before" ]; then
  before=${2:?qgemv-vs-ggml.sh: --before needs a git revision}
  shift 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CFLAGS=(-O3 -std=gnu11 -fno-strict-aliasing -pthread -Wall -Wno-unused-function)
objs=()
defs=()
if [ -n "$before" ]; then
  mkdir -p "$tmp/before"
  if [ -d "$before" ]; then
    cp "$before"/*.c "$before"/*.h "$tmp/before/"
  else
    for f in $(git -C "$root" ls-tree --name-only "$before" native/ | grep -E '\.(c|h)$'); do
      git -C "$root" show "$before:$f" > "$tmp/before/$(basename "$f")"
    done
  fi
  for c in kernels qdot qgemm; do gcc "${CFLAGS[@]}" ${BEFORE_CFLAGS:-} -c "$tmp/before/$c.c" -o "$tmp/before/$c.o"; done
  ld -r "$tmp/before/kernels.o" "$tmp/before/qdot.o" "$tmp/before/qgemm.o" -o "$tmp/before.o"
  # Rename every global the old kernels define, so they sit beside the current ones.
  nm --defined-only -g "$tmp/before.o" | awk '{print $3" before_"$3}' > "$tmp/syms"
  objcopy --redefine-syms="$tmp/syms" "$tmp/before.o"
  objs+=("$tmp/before.o")
  defs+=(-DCOKV_BEFORE)
fi
gcc "${CFLAGS[@]}" ${COKV_CFLAGS:-} "${defs[@]}" -I"$root/native" -I"$L/ggml/include" "$root/bench/qgemv-vs-ggml.c" \
  "$root/native/kernels.c" "$root/native/qdot.c" "$root/native/qgemm.c" "${objs[@]}" \
  -L"$L/build/bin" -Wl,-rpath,"$L/build/bin" -lggml -lggml-base -lggml-cpu -lm -o "$tmp/qgemv-vs-ggml"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
  "cokv $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet -- native || echo '+changes')${before:+, before = $before}"
"$tmp/qgemv-vs-ggml" "$@" 2> >(grep -v '^repack:' >&2)
