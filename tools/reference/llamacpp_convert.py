#!/usr/bin/env python3
"""Run llama.cpp's own convert_hf_to_gguf.py with one change: a BPE tokenizer whose
pre-tokenizer hash the converter does not know is written as pre-tokenizer "smollm".

    PYTHONPATH=/tmp/llama.cpp/gguf-py python tools/reference/llamacpp_convert.py \
        --llama-cpp /tmp/llama.cpp MODEL_DIR --outtype f32 --outfile out.gguf [converter args]

Why: the converter recognises a BPE tokenizer by hashing its token ids for a fixed test
string (TextModel.get_vocab_base_pre). Our fixtures use cokv-retrieval-tiny's
2048-token BPE. Its pre-tokenizer is exactly SmolLM's (tokenizers `Sequence[Digits
(individual_digits), ByteLevel(add_prefix_space=False, use_regex=True)]`, no normalizer),
but its vocabulary is different, so the hash is new and the converter stops with
"BPE pre-tokenizer was not recognized". llama.cpp's `smollm` pre-tokenizer is that same
split (single digits, then the GPT-2 regex), so we let the original method run and
only replace its NotImplementedError with the answer "smollm". Everything else (tensor
names, Q/K permutation, gemma's +1 on norm weights, metadata, token types, merges) is
the converter's own, unchanged code. make_arch_fixtures.py checks afterwards that
llama.cpp (node-llama-cpp) tokenizes a mixed corpus exactly as transformers does.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--llama-cpp":
        raise SystemExit(__doc__)
    root = Path(args[1]).resolve()
    sys.argv = [str(root / "convert_hf_to_gguf.py"), *args[2:]]
    sys.path.insert(0, str(root / "gguf-py"))
    sys.path.insert(0, str(root))

    import conversion.base as base  # the converter imports this same module object

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:  # type: ignore[no-untyped-def]
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            print("llamacpp_convert: BPE pre-tokenizer hash not known to the converter; "
                  "writing tokenizer.ggml.pre = 'smollm'", file=sys.stderr, flush=True)
            return "smollm"

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    runpy.run_path(str(root / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main()
