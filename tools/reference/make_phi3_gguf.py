#!/usr/bin/env python3
"""Add a GGUF F32 variant, made by llama.cpp's own convert_hf_to_gguf.py, to the phi3-tiny and phi4mini-tiny
fixtures (written by make_arch_fixtures.py, HF only).

The converter's Phi3MiniModel reads only a SentencePiece tokenizer.model, which the fixtures (BPE tokenizer.json)
lack. This script trains a 2048-piece SentencePiece BPE model (byte fallback, so llama.cpp finds its byte tokens)
on the shared Paul Graham essays, puts it beside a temporary copy of the HF folder and converts that. Tokenization
differs from the HF form, but the fixtures' prompts are token ids, and the weights are the HF ones exactly (F32
output of BF16 weights, no Q/K permutation for phi3), so the HF float64 references hold for the GGUF unchanged:
the script checks that by reading the GGUF back. It then records llama.cpp's own greedy tokens (node-llama-cpp,
tools/reference/llamacpp_ref.mjs) and keeps only prompts where they equal the float64 greedy tokens.

    PYTHONPATH=/tmp/llama.cpp/gguf-py NLC_DIR=/tmp/nlc/node_modules/node-llama-cpp \
        /tmp/venv/bin/python tools/reference/make_phi3_gguf.py --llama-cpp /tmp/llama.cpp
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the fixtures' JSON layout)

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "test" / "fixtures" / "models"


def train_spm(workdir: Path, assets: Path) -> Path:
    files = sorted(glob.glob(str(assets / "data" / "needle" / "PaulGrahamEssays" / "*.txt")))[:20]
    corpus = workdir / "corpus.txt"
    corpus.write_text("".join(Path(f).read_text(encoding="utf-8") for f in files), encoding="utf-8")
    prefix = workdir / "spm2048"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=2048, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, seed_sentencepiece_size=100000,
        # llama.cpp's vocab loader looks these up by text for models whose general.name says phi3
        # (src/llama-vocab.cpp); Phi-3's own tokenizer has them.
        user_defined_symbols=["<|endoftext|>"], minloglevel=2,
    )
    return prefix.with_suffix(".model")


def convert(llama_cpp: Path, hf_dir: Path, spm_model: Path, out: Path, workdir: Path) -> None:
    tmp = workdir / hf_dir.parent.name
    shutil.copytree(hf_dir, tmp)
    shutil.copy(spm_model, tmp / "tokenizer.model")
    for f in ("tokenizer.json", "tokenizer_config.json"):  # the converter would mix the BPE file into the SPM vocab
        (tmp / f).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py")}
    subprocess.run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(tmp), "--outtype", "f32", "--outfile", str(out)],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check_weights(gguf_path: Path, hf_dir: Path) -> None:
    import gguf  # noqa: PLC0415

    r = gguf.GGUFReader(str(gguf_path))
    got = {t.name: np.asarray(t.data, dtype=np.float32) for t in r.tensors}
    hf = {k: v.to(torch.float32).numpy() for k, v in load_file(str(hf_dir / "model.safetensors")).items()}
    emb = hf["model.embed_tokens.weight"]
    assert np.array_equal(got["token_embd.weight"].reshape(emb.shape), emb), "token_embd differs"
    qkv = hf["model.layers.0.self_attn.qkv_proj.weight"]
    assert np.array_equal(got["blk.0.attn_qkv.weight"].reshape(qkv.shape), qkv), "attn_qkv differs"
    gu = hf["model.layers.0.mlp.gate_up_proj.weight"]
    assert np.array_equal(got["blk.0.ffn_up.weight"].reshape(gu.shape), gu), "ffn_up (gate|up) differs"


def llama_greedy(gguf_path: Path, prompts: list[dict], nlc_dir: str) -> list[list[int]]:
    proc = subprocess.Popen(["node", str(REPO / "tools/reference/llamacpp_ref.mjs")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "NLC_DIR": nlc_dir})
    out = []
    try:
        for p in prompts:
            proc.stdin.write(json.dumps({"op": "run", "model": str(gguf_path), "ids": p["ids"], "steps": len(p["greedy"])}) + "\n")
            proc.stdin.flush()
            out.append(json.loads(proc.stdout.readline())["greedy"])
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, default=Path("/tmp/llama.cpp"))
    ap.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets")
    ap.add_argument("--nlc", default=os.environ.get("NLC_DIR", "/tmp/nlc/node_modules/node-llama-cpp"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        work = Path(t)
        model = train_spm(work, args.assets)
        for name in ("phi3-tiny", "phi4mini-tiny"):
            d = MODELS / name
            ref_path = d / "reference.json"
            ref = json.loads(ref_path.read_text())
            hf = ref["variants"]["hf-bf16"]
            out = d / f"{name}-f32.gguf"
            convert(args.llama_cpp, REPO / hf["path"], model, out, work)
            check_weights(out, REPO / hf["path"])
            greedy = llama_greedy(out, hf["prompts"], args.nlc)
            prompts = []
            for p, g in zip(hf["prompts"], greedy):
                if g == p["greedy"]:
                    prompts.append({**p, "llamacppGreedy": g})
                else:
                    print(f"{name}: prompt of {len(p['ids'])} ids: llama.cpp greedy {g[:8]}… differs from float64 {p['greedy'][:8]}…; dropped")
            assert prompts, f"{name}: llama.cpp agrees on no prompt"
            ref["variants"]["gguf-f32"] = {
                "path": str(out.relative_to(REPO)), "format": "gguf", "dtype": "f32", "prompts": prompts,
                "notes": "convert_hf_to_gguf.py --outtype f32 with a SentencePiece tokenizer.model (tools/reference/make_phi3_gguf.py); "
                         "weights identical to hf-bf16, so its float64 references apply",
            }
            mf.dump_json(ref_path, ref)
            print(f"{name}: {out.relative_to(REPO)} ({out.stat().st_size} bytes), {len(prompts)} prompts")


if __name__ == "__main__":
    main()
