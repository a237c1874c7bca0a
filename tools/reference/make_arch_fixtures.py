#!/usr/bin/env python3
"""Random-weight fixtures for the newer architectures (qwen3, gemma3, smollm3, phi3 and a
Phi-4-mini-style longrope phi3) and for every llama-quantize preset, with float64
transformers references and llama.cpp's own greedy tokens.

    PYTHONPATH=/tmp/llama.cpp/gguf-py /tmp/venv/bin/python tools/reference/make_arch_fixtures.py \
        [--llama-cpp /tmp/llama.cpp] [--nlc /tmp/nlc/node_modules/node-llama-cpp] [--only NAME ...]

Needs: what make_fixtures.py needs (torch CPU, transformers 5.x, safetensors, tokenizers,
gguf, numpy), a llama.cpp checkout with build/bin/llama-quantize (its convert_hf_to_gguf.py
and gguf-py are used), and node-llama-cpp (same llama.cpp version) for llama.cpp's greedy
tokens and logits. The TypeScript tests never run this; they only read what it wrote.

Everything is deterministic (fixed torch generators, no timestamps; llama.cpp runs on one
thread). See tools/reference/README.md for what each fixture is and how it is made.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

sys.dont_write_bytecode = True  # no tools/reference/__pycache__ from importing the sibling module
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (also sets the offline / quiet environment)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gguf  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

REPO = mf.REPO
VOCAB, BOS_ID, EOS_ID, PAD_ID = mf.VOCAB, mf.BOS_ID, mf.EOS_ID, mf.PAD_ID
GREEDY_STEPS, REL_MARGIN, PROMPT_LENGTHS = mf.GREEDY_STEPS, mf.REL_MARGIN, mf.PROMPT_LENGTHS
GENERATOR = "tools/reference/make_arch_fixtures.py"
# Candidate prompt windows: make_fixtures' six offsets first, then every other offset into each
# passage (more candidates than make_fixtures, because here a prompt must also make llama.cpp's
# greedy run equal the float64 one).
PROMPT_OFFSETS = tuple(mf.PROMPT_OFFSETS) + tuple(o for o in range(200) if o not in mf.PROMPT_OFFSETS)
QUANT_MAX_CANDIDATES = 400  # per prompt length and quantized file
QUANT_PROMPT_LENGTHS = (12, 100)  # two prompts per quantized file (24 files; keeps the fixture set small)
# Norm weights are effective multipliers s * (1 + jitter * N(0,1)); gemma stores them minus 1.
#  q_norm / k_norm: s = 2, jitter 0.3.  With s = 1 the normalised q.k scores are too flat and
#  greedy decoding repeats a token (qwen3-tiny: 7 distinct tokens in 32 steps).
#  gemma3 post_attention / post_feedforward norms: s = 6, jitter 0.1.  gemma3 multiplies the
#  embeddings by sqrt(hidden) = 8, so with s = 1 the residual stream stays the token's own
#  (tied) embedding and greedy repeats one token forever; s = 6 gives 25-31 distinct tokens.
#  All other norms: s = 1, jitter 0.1 (make_fixtures).
QK_NORM_SCALE, QK_NORM_JITTER = 2.0, 0.3
GEMMA_POST_NORM_SCALE = 6.0
QUANT_PRESETS = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                 "IQ4_NL", "IQ4_XS"]
LLAMACPP_COMMIT = "de3ff81"  # the llama.cpp build inside node-llama-cpp 3.22.1 (and its gitRelease.bundle)


def log(*a: Any) -> None:
    print(*a, flush=True)


# --------------------------------------------------------------------------------------
# configs


def qwen3_tiny_config() -> Qwen3Config:
    # explicit head_dim 32 != hidden/heads = 16; q_norm / k_norm over head_dim
    return Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


def gemma3_tiny_config() -> Gemma3TextConfig:
    # 6 layers = llama.cpp's fixed gemma3 pattern (5 sliding + 1 full; the converter writes no
    # pattern key).  window 16 << prompts of 40 / 100 ids.  local rope base 40000 (neither
    # gemma's usual 10000 nor the global 1e6), query_pre_attn_scalar 48 != head_dim 32.
    return Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, query_pre_attn_scalar=48, sliding_window=16,
        hidden_activation="gelu_pytorch_tanh",
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 40000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
    )


def smollm3_tiny_config() -> SmolLM3Config:
    # no_rope_layers = [1, 1, 1, 0]: layer 3 is NoPE (llama.cpp hard-codes every 4th layer)
    return SmolLM3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, no_rope_layers=[1, 1, 1, 0],
        rope_parameters={"rope_type": "default", "rope_theta": 2000000.0},
    )


def phi3_tiny_config() -> Phi3Config:
    # head_dim 16, partial_rotary_factor 0.5: rotary over the first 8 dims of each head; untied like Phi-3-mini
    return Phi3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        original_max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    )


def longrope_factors() -> tuple[list[float], list[float]]:
    """12 short / long factors (rotary dim 24).  Shaped like Phi-4-mini's (short: ~1 for the
    fast pairs rising to ~3 for the slow ones; long: up to ~40), rounded to 4 decimals."""
    n = 12
    short = [round(1.0 + 2.0 * (i / (n - 1)) ** 2, 4) for i in range(n)]
    long = [round(1.0 + 39.0 * (i / (n - 1)) ** 3, 4) for i in range(n)]
    return short, long


def phi4mini_tiny_config() -> Phi3Config:
    # Phi-4-mini's shape of rope: longrope, partial_rotary_factor 0.75, theta 10000,
    # max_position_embeddings 131072 / original 4096 (-> attention factor
    # sqrt(1 + ln 32 / ln 4096)), tied embeddings.  head_dim 32 -> rotary dim 24, 12 factors.
    short, long = longrope_factors()
    return Phi3Config(
        vocab_size=VOCAB, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=131072,
        original_max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, sliding_window=None,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                         "short_factor": short, "long_factor": long,
                         "original_max_position_embeddings": 4096},
    )


def quant_config(hidden: int, heads: int, ffn: int, layers: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=1, head_dim=hidden // heads,
        max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def arch_specs() -> list[dict[str, Any]]:
    return [
        {"name": "qwen3-tiny", "cls": Qwen3ForCausalLM, "config": qwen3_tiny_config(), "seed": 5005,
         "hf_dtype": "bf16", "gguf_types": ["f32", "f16"], "gguf_arch": "qwen3"},
        {"name": "gemma3-tiny", "cls": Gemma3ForCausalLM, "config": gemma3_tiny_config(), "seed": 6006,
         "hf_dtype": "bf16", "gguf_types": ["f32", "f16", "bf16"], "gguf_arch": "gemma3"},
        {"name": "smollm3-tiny", "cls": SmolLM3ForCausalLM, "config": smollm3_tiny_config(), "seed": 7007,
         "hf_dtype": "bf16", "gguf_types": ["f32", "f16"], "gguf_arch": "smollm3"},
        {"name": "phi3-tiny", "cls": Phi3ForCausalLM, "config": phi3_tiny_config(), "seed": 8008,
         "hf_dtype": "bf16", "gguf_types": [], "gguf_arch": None},
        {"name": "phi4mini-tiny", "cls": Phi3ForCausalLM, "config": phi4mini_tiny_config(), "seed": 9009,
         "hf_dtype": "bf16", "gguf_types": [], "gguf_arch": None},
    ]


def quant_specs() -> list[dict[str, Any]]:
    # Sizes: the 2048 x hidden token_embd dominates every file (tied, so it is also the output matrix and
    # llama-quantize gives it the output's type).  Two layers for both would take the twelve-file sets past
    # the fixture budget, so the all-256 model has one layer and the fallback model two.
    return [
        # every matrix row (ne0) a multiple of 256: K-quants and IQ4_XS apply to every tensor; 1 layer
        {"name": "llama-quant-h256", "cls": LlamaForCausalLM, "config": quant_config(256, 4, 256, 1),
         "seed": 10010, "hf_dtype": "f32", "gguf_arch": "llama"},
        # hidden 160: rows of 160 for token_embd / q / k / v / o / gate / up, so llama-quantize falls back per
        # tensor (Q5_0, Q5_1, Q8_0, Q4_0, IQ4_NL ...) as it does for SmolLM2 (576) and Qwen2.5-0.5B (896);
        # ffn_down rows are 256 and keep the K type.  2 layers, so attn_v / ffn_down types also differ by layer.
        {"name": "llama-quant-h160", "cls": LlamaForCausalLM, "config": quant_config(160, 5, 256, 2),
         "seed": 11011, "hf_dtype": "f32", "gguf_arch": "llama"},
    ]


# --------------------------------------------------------------------------------------
# weights


@torch.no_grad()
def init_arch_weights(model: torch.nn.Module, seed: int) -> None:
    """make_fixtures' scales, extended to the fused phi3 matrices, q/k norms and gemma's
    offset norms (see QK_NORM_SCALE).  gate_up_proj: the first half of the rows is gate (gain 1), the second up (gain 2)."""
    g = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    gemma = model.config.model_type.startswith("gemma")
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):
            scale, jitter = 1.0, mf.NORM_JITTER
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                scale, jitter = QK_NORM_SCALE, QK_NORM_JITTER
            elif gemma and name.endswith(("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")):
                scale = GEMMA_POST_NORM_SCALE
            v = scale * (1.0 + jitter * torch.randn(p.shape, generator=g))
            if gemma:  # gemma stores the offset: its norm multiplies by (1 + weight)
                v = v - 1.0
        elif "embed_tokens" in name or name.startswith("lm_head"):
            v = (mf.EMBED_GAIN / math.sqrt(hidden)) * torch.randn(p.shape, generator=g)
        else:
            assert p.dim() == 2 and name.endswith(".weight"), name
            kind = name.split(".")[-2]
            std = 1.0 / math.sqrt(p.shape[1])
            if kind == "gate_up_proj":
                half = p.shape[0] // 2
                v = torch.randn(p.shape, generator=g) * std
                v[:half] *= mf.LINEAR_GAINS["gate_proj"]
                v[half:] *= mf.LINEAR_GAINS["up_proj"]
            else:
                gain = 2.0 if kind == "qkv_proj" else mf.LINEAR_GAINS[kind]
                v = gain * std * torch.randn(p.shape, generator=g)
        p.copy_(v.to(p.dtype))


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(spec["seed"])
    model = spec["cls"](spec["config"])
    if spec["cls"] is LlamaForCausalLM:
        mf.init_weights(model, spec["seed"])
    else:
        init_arch_weights(model, spec["seed"])
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False)
    return model.to(mf.TORCH_DTYPES[spec["hf_dtype"]]).eval()


# --------------------------------------------------------------------------------------
# float64 reference: RMSNorm (both forms), softmax and RoPE (all rope types used here) in float64


def _gemma_rmsnorm_forward_f64(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64)
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
    return out * (1.0 + self.weight.to(torch.float64))


def rope_inv_freq_f64(cfg: Any, rp: dict[str, Any], seq_len: int) -> tuple[torch.Tensor, float]:
    """(inverse frequencies over the rotary dims, cos/sin scale) in float64, as transformers
    computes them in float32 (modeling_rope_utils): default and longrope."""
    base = float(rp["rope_theta"])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    dim = int(head_dim * rp.get("partial_rotary_factor", 1.0))
    shape = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    inv = 1.0 / (base ** shape)
    kind = rp.get("rope_type", "default")
    if kind == "default":
        return inv, 1.0
    assert kind == "longrope", rp
    orig = int(rp["original_max_position_embeddings"])
    factor = rp.get("factor") or cfg.max_position_embeddings / orig
    att = rp.get("attention_factor")
    if att is None:
        att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    ext = rp["long_factor"] if seq_len > orig else rp["short_factor"]
    return inv / torch.tensor(ext, dtype=torch.float64), float(att)


def make_rotary_forward_f64(module: torch.nn.Module, cfg: Any) -> Callable:
    per_type = isinstance(getattr(module, "rope_type", None), dict)  # gemma3: one rope per layer type

    def stored(layer_type: str | None) -> tuple[torch.Tensor, float]:
        if layer_type is None:
            return module.original_inv_freq, float(module.attention_scaling)
        return getattr(module, f"{layer_type}_original_inv_freq"), float(getattr(module, f"{layer_type}_attention_scaling"))

    @torch.no_grad()
    def forward(x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None):
        assert (layer_type is not None) == per_type
        rp = cfg.rope_parameters[layer_type] if layer_type is not None else cfg.rope_parameters
        seq_len = int(position_ids.max()) + 1
        inv, scale = rope_inv_freq_f64(cfg, rp, seq_len)
        orig = rp.get("original_max_position_embeddings")
        if orig is None or seq_len <= int(orig):  # transformers' own (float32) short / default frequencies
            hf_inv, hf_scale = stored(layer_type)
            assert torch.allclose(inv, hf_inv.to(torch.float64), rtol=1e-5, atol=0), (inv, hf_inv)
            assert abs(scale - hf_scale) < 1e-12, (scale, hf_scale)
        freqs = position_ids[:, :, None].to(torch.float64) * inv[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)

    return forward


def make_f64(model: torch.nn.Module) -> torch.nn.Module:
    model = model.to(torch.float64).eval()
    cfg = model.config
    for m in model.modules():
        name = type(m).__name__
        if name == "Gemma3RMSNorm":
            m.forward = _gemma_rmsnorm_forward_f64.__get__(m)
        elif name.endswith("RMSNorm"):
            assert hasattr(m, "variance_epsilon"), name
            m.forward = mf._rmsnorm_forward_f64.__get__(m)
        elif name.endswith("RotaryEmbedding"):
            m.forward = make_rotary_forward_f64(m, cfg)
    return model


def load_model(hf_dir: Path, sd: dict[str, torch.Tensor], overrides: dict[str, Any], dtype: torch.dtype,
               f64: bool = True) -> torch.nn.Module:
    """The HF model from hf_dir's config (+ overrides) holding exactly the weights in sd."""
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype, attn_implementation="eager", **overrides)
    for k, v in overrides.items():
        assert getattr(model.config, k) == v, k
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    assert not unexpected, unexpected
    assert all(k == "lm_head.weight" for k in missing), missing
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model = model.eval()
    return make_f64(model) if f64 else model


@torch.no_grad()
def run_prompt(model: torch.nn.Module, ids: list[int]) -> dict[str, Any]:
    """make_fixtures.run_prompt (full-recompute float64 greedy, no EOS stop, same output fields)
    plus, kept internal, each step's runner-up token and relative margin."""
    seq = list(ids)
    greedy: list[int] = []
    margins: list[float] = []
    rel: list[float] = []
    second: list[int] = []
    first: torch.Tensor | None = None
    for _ in range(GREEDY_STEPS):
        lg = mf.last_logits(model, seq)
        if first is None:
            first = lg.clone()
        top2 = torch.topk(lg, 2)
        tok = int(top2.indices[0])
        m = float(top2.values[0] - top2.values[1])
        greedy.append(tok)
        second.append(int(top2.indices[1]))
        margins.append(m)
        rel.append(m / float(lg.max() - lg.min()))
        seq.append(tok)
    assert first is not None
    order = sorted(range(first.numel()), key=lambda i: (-float(first[i]), i))[:mf.TOP_K]
    return {
        "ids": list(ids),
        "top50": [[i, float(first[i])] for i in order],
        "logits": [mf.sig6(float(v)) for v in first],
        "greedy": greedy,
        "minMargin": min(margins),
        "minRelMargin": min(rel),
        "margins": [mf.sig6(m) for m in margins],
        "_logits64": first,
        "_second": second,
        "_rel": rel,
    }


# --------------------------------------------------------------------------------------
# llama.cpp: converter, quantizer, node-llama-cpp


class LlamaCpp:
    """tools/reference/llamacpp_ref.mjs as a child process (one JSON line per request)."""

    def __init__(self, nlc_dir: Path) -> None:
        env = dict(os.environ, NLC_DIR=str(nlc_dir))
        self.proc = subprocess.Popen(["node", str(REPO / "tools" / "reference" / "llamacpp_ref.mjs")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.cache: dict[str, Any] = {}
        self.version = self.call({"op": "info"})["nodeLlamaCpp"]

    def call(self, req: dict[str, Any]) -> Any:
        key = json.dumps(req, sort_keys=True)
        if key in self.cache:
            return self.cache[key]
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("llamacpp_ref.mjs exited")
        res = json.loads(line)
        if "error" in res:
            raise RuntimeError(res["error"])
        self.cache[key] = res
        return res

    def run(self, path: Path, ids: list[int], kv: str = "default") -> dict[str, Any]:
        return self.call({"op": "run", "model": str(path), "ids": ids, "steps": GREEDY_STEPS, "kv": kv})

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def convert(llama_cpp: Path, hf_dir: Path, out: Path, outtype: str, name: str) -> list[str]:
    cmd = [sys.executable, str(REPO / "tools" / "reference" / "llamacpp_convert.py"), "--llama-cpp",
           str(llama_cpp), str(hf_dir), "--outtype", outtype, "--outfile", str(out), "--model-name", name]
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"converter failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    assert "writing tokenizer.ggml.pre = 'smollm'" in p.stderr, "expected the pre-tokenizer fallback"
    return ["python", "tools/reference/llamacpp_convert.py", "--llama-cpp", "<llama.cpp>", "<hf dir>",
            "--outtype", outtype, "--outfile", out.name, "--model-name", name]


def quantize(llama_cpp: Path, src: Path, out: Path, preset: str) -> list[str]:
    cmd = [str(llama_cpp / "build" / "bin" / "llama-quantize"), str(src), str(out), preset, "1"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"llama-quantize failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return ["llama-quantize", "<f32 source>.gguf", out.name, preset, "1"]


def gguf_arch_enum(arch: str) -> gguf.MODEL_ARCH:
    inv = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    return inv[arch]


def gguf_state_dict(spec: dict[str, Any], path: Path, hf_keys: list[str]) -> dict[str, torch.Tensor]:
    """Read a converter/quantizer GGUF back (gguf-py, dequantize) and undo the converter's
    transforms: gemma3 norm weights -1 (the converter adds 1), llama-type archs (llama,
    smollm3) Q/K rows un-permuted (n_head for Q, n_head_kv for K)."""
    cfg = spec["config"]
    arch = spec["gguf_arch"]
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == arch
    nmap = gguf.get_tensor_name_map(gguf_arch_enum(arch), cfg.num_hidden_layers)
    to_gguf = {}
    for k in hf_keys:
        if k == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        gname = nmap.get_name(k, try_suffixes=(".weight", ".bias"))
        assert gname is not None, k
        to_gguf[gname] = k
    tensors = {t.name: t for t in r.tensors}
    assert set(tensors) == set(to_gguf), (sorted(set(tensors) ^ set(to_gguf)))
    sd: dict[str, torch.Tensor] = {}
    for gname, t in tensors.items():
        hf = to_gguf[gname]
        deq = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        w = np.asarray(deq, dtype=np.float32).reshape(shape).astype(np.float64)
        if arch in ("llama", "smollm3") and hf.endswith("self_attn.q_proj.weight"):
            w = mf.rope_pair_unpermute(w, cfg.num_attention_heads)
        elif arch in ("llama", "smollm3") and hf.endswith("self_attn.k_proj.weight"):
            w = mf.rope_pair_unpermute(w, cfg.num_key_value_heads)
        if arch == "gemma3" and hf.endswith("norm.weight"):
            w = w - 1.0  # exact in float64: the stored f32 value g becomes 1 + (g - 1) = g in the forward
        sd[hf] = torch.from_numpy(np.ascontiguousarray(w))
    if cfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


# --------------------------------------------------------------------------------------
# prompt selection


def candidates(passages: list[list[int]], L: int) -> list[tuple[int, int]]:
    return [(pi, off) for off in PROMPT_OFFSETS for pi in range(len(passages)) if off + L - 1 <= len(passages[pi])]


def check_candidate(ids: list[int], models: dict[str, torch.nn.Module], files: dict[str, Path],
                    lcpp: LlamaCpp | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(per-variant results or None, a record of what was checked)."""
    res: dict[str, Any] = {}
    worst = math.inf
    for v, m in models.items():
        res[v] = run_prompt(m, ids)
        worst = min(worst, res[v]["minRelMargin"])
        if worst < REL_MARGIN:
            return None, {"rejected": "not decisive", "variant": v, "minRelMargin": res[v]["minRelMargin"]}
    disagree = []
    for v, path in files.items():
        assert lcpp is not None
        r = res[v]
        llamacpp_fields(lcpp, path, r)
        if r["llamacppGreedy"] != r["greedy"]:
            k = r["llamacppGreedyAgree"]
            disagree.append({"variant": v, "firstDifferentStep": k, "float64Token": r["greedy"][k],
                             "llamacppToken": r["llamacppGreedy"][k], "float64RunnerUp": r["_second"][k],
                             "float64Margin": r["margins"][k],
                             "float64RelMargin": sig(r["_rel"][k]),
                             "llamacppPrefillMaxRelDiff": sig(r["llamacppMaxRelDiff"])})
    if disagree:
        return None, {"rejected": "llama.cpp greedy differs", "details": disagree}
    return res, {"accepted": True, "worstRelMargin": worst}


def sig(x: float) -> float:
    return float(f"{x:.4g}")


def select_prompts(tok: Any, models: dict[str, torch.nn.Module], files: dict[str, Path],
                   lcpp: LlamaCpp | None, label: str) -> tuple[dict[str, list[dict[str, Any]]], list[dict], list[dict]]:
    """For each prompt length, the first candidate window that is decisive in every variant and
    (for GGUF variants) whose llama.cpp greedy run equals the float64 one."""
    passages = mf.tokenize_passages(tok)
    by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in models}
    chosen: list[dict[str, Any]] = []
    disagreements: list[dict[str, Any]] = []
    for L in PROMPT_LENGTHS:
        ok = False
        n_rej = 0
        for pi, off in candidates(passages, L):
            ids = [BOS_ID] + passages[pi][off: off + L - 1]
            res, rec = check_candidate(ids, models, files, lcpp)
            if res is None:
                n_rej += 1
                if rec["rejected"] == "llama.cpp greedy differs":
                    disagreements.append({"length": L, "passage": pi, "offset": off, **rec})
                    log(f"  {label} len {L}: passage {pi} offset {off}: llama.cpp greedy differs "
                        f"{[(d['variant'], d['firstDifferentStep'], d['float64Margin']) for d in rec['details']]}")
                continue
            for v in models:
                by_variant[v].append(res[v])
            chosen.append({"length": L, "passage": pi, "offset": off, "text": tok.decode(ids[1:]),
                           "worstRelMargin": rec["worstRelMargin"], "candidatesRejected": n_rej})
            log(f"  {label} len {L}: passage {pi} offset {off} (after {n_rej} rejected), worst rel margin "
                f"{rec['worstRelMargin']:.4f}, distinct greedy {len(set(next(iter(res.values()))['greedy']))}")
            ok = True
            break
        assert ok, f"{label}: no acceptable prompt of length {L}"
    return by_variant, chosen, disagreements


@torch.no_grad()
def follow(model: torch.nn.Module, ids: list[int], tokens: list[int]) -> tuple[str, int, float, float]:
    """Float64 greedy along llama.cpp's tokens, stopping at the first step that is not decisive or
    whose argmax differs: (outcome, step, margin, rel margin)."""
    seq = list(ids)
    for k, t in enumerate(tokens):
        lg = mf.last_logits(model, seq)
        top2 = torch.topk(lg, 2)
        m = float(top2.values[0] - top2.values[1])
        rel = m / float(lg.max() - lg.min())
        if int(top2.indices[0]) != t:
            return "llama.cpp differs", k, m, rel
        if rel < REL_MARGIN:
            return "not decisive", k, m, rel
        seq.append(t)
    return "agrees", len(tokens), math.nan, math.nan


def llamacpp_fields(lcpp: LlamaCpp, path: Path, r: dict[str, Any]) -> None:
    ref = r["_logits64"].numpy()
    rng = float(ref.max() - ref.min())
    out = lcpp.run(path, r["ids"])
    lg = np.asarray(out["logits"], dtype=np.float64)
    lg32 = np.asarray(lcpp.run(path, r["ids"], kv="f32")["logits"], dtype=np.float64)
    r["llamacppGreedy"] = out["greedy"]
    agree = 0
    for a, b in zip(out["greedy"], r["greedy"]):
        if a != b:
            break
        agree += 1
    r["llamacppGreedyAgree"] = agree
    r["llamacppMaxAbsDiff"] = float(np.abs(lg - ref).max())
    r["llamacppMaxRelDiff"] = float(np.abs(lg - ref).max() / rng)
    r["llamacppF32MaxRelDiff"] = float(np.abs(lg32 - ref).max() / rng)


def select_prompts_quant(tok: Any, model: torch.nn.Module, path: Path, lcpp: LlamaCpp,
                         label: str) -> tuple[list[dict[str, Any]], list[dict], dict[str, Any]]:
    """Per length: the first candidate (of at most QUANT_MAX_CANDIDATES) whose 32 llama.cpp greedy
    tokens equal the float64 ones with every float64 step decisive.  If none does, the first
    decisive candidate, flagged (llamacppGreedyAgree < 32)."""
    passages = mf.tokenize_passages(tok)
    prompts, chosen = [], []
    stats: dict[str, Any] = {}
    for L in QUANT_PROMPT_LENGTHS:
        cands = candidates(passages, L)[:QUANT_MAX_CANDIDATES]
        tried = n_nd = 0
        differs: list[dict[str, Any]] = []
        picked = None
        for pi, off in cands:
            ids = [BOS_ID] + passages[pi][off: off + L - 1]
            tried += 1
            out = lcpp.run(path, ids)
            outcome, k, m, rel = follow(model, ids, out["greedy"])
            if outcome == "agrees":
                picked = (pi, off, ids)
                break
            if outcome == "not decisive":
                n_nd += 1
            else:
                differs.append({"passage": pi, "offset": off, "firstDifferentStep": k, "float64Margin": sig(m),
                                "float64RelMargin": sig(rel)})
        fallback = picked is None
        if fallback:
            for pi, off in cands:
                ids = [BOS_ID] + passages[pi][off: off + L - 1]
                if run_prompt(model, ids)["minRelMargin"] >= REL_MARGIN:
                    picked = (pi, off, ids)
                    break
        assert picked is not None, f"{label}: no decisive prompt of length {L}"
        pi, off, ids = picked
        r = run_prompt(model, ids)
        assert r["minRelMargin"] >= REL_MARGIN
        llamacpp_fields(lcpp, path, r)
        assert fallback or r["llamacppGreedy"] == r["greedy"]
        prompts.append(r)
        chosen.append({"length": L, "passage": pi, "offset": off, "text": tok.decode(ids[1:]),
                       "worstRelMargin": r["minRelMargin"], "llamacppAgreesFully": not fallback})
        stats[str(L)] = {"candidatesTried": tried, "notDecisive": n_nd, "llamacppDiffers": len(differs),
                         "firstDifferences": differs[:8],
                         "differingStepMedian": (sorted(d["firstDifferentStep"] for d in differs)[len(differs) // 2]
                                                 if differs else None)}
        log(f"  {label} len {L}: passage {pi} offset {off}: "
            f"{'llama.cpp agrees' if not fallback else 'NO full agreement (first decisive)'} after {tried} tried "
            f"({len(differs)} llama.cpp-differs, {n_nd} not decisive); llama.cpp agrees for "
            f"{r['llamacppGreedyAgree']} steps, max rel diff {r['llamacppMaxRelDiff']:.2e}")
    return prompts, chosen, stats


def strip_internal(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if not k.startswith("_")}


# --------------------------------------------------------------------------------------
# observations of transformers' semantics (recorded in reference.json -> observed)


@torch.no_grad()
def observe_sliding_window(hf_dir: Path, sd: dict[str, torch.Tensor], W: int) -> dict[str, Any]:
    """One sliding layer (layer 0's weights): does the last position see the token W-1 back
    (window includes the query) and not the one W back?"""
    sd1 = {k: v for k, v in sd.items() if not k.startswith("model.layers.") or k.split(".")[2] == "0"}
    m = load_model(hf_dir, sd1, {"num_hidden_layers": 1, "layer_types": ["sliding_attention"]}, torch.float64)
    base = [BOS_ID] + [100 + (7 * i) % 900 for i in range(39)]
    q = len(base) - 1

    def moved(pos: int) -> float:
        alt = list(base)
        alt[pos] = 1500 if alt[pos] != 1500 else 1501
        return float((mf.last_logits(m, alt) - mf.last_logits(m, base)).abs().max())

    return {"window": W, "queryPosition": q,
            "logitChangeWhenTokenAtDistanceWMinus1Changes": moved(q - (W - 1)),
            "logitChangeWhenTokenAtDistanceWChanges": moved(q - W),
            "meaning": f"with sliding_window = W = {W}, position q attends to keys q-W+1 .. q (W keys, the query "
                       "itself included): changing the token at distance W-1 moves the logits, at distance W it "
                       "does not (one sliding layer, float64). Same rule as llama.cpp "
                       "(LLAMA_SWA_TYPE_STANDARD masks p1 - p0 >= n_swa)."}


class _GeluF16Table(torch.nn.Module):
    """ggml's CPU GELU / GEGLU (GGML_GELU_FP16): x rounded to F16, gelu-tanh looked up in an F16 table;
    x <= -10 -> 0, x >= 10 -> x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.gelu(x.to(torch.float16).to(torch.float64), approximate="tanh")
        y = y.to(torch.float16).to(torch.float64)
        y = torch.where(x <= -10, torch.zeros_like(x), y)
        return torch.where(x >= 10, x, y)


@torch.no_grad()
def observe_llamacpp_gelu(model: torch.nn.Module, prompts: list[dict[str, Any]], path: Path,
                          lcpp: LlamaCpp) -> dict[str, Any]:
    """How much of llama.cpp's remaining gemma3 difference (F32 file, F32 K/V cache, no flash attention)
    is its F16-table GELU: the float64 reference with the GELU replaced by that table."""
    exact, table = [], []
    acts = [layer.mlp.act_fn for layer in model.model.layers]
    for p in prompts:
        lg = np.asarray(lcpp.run(path, p["ids"], kv="f32")["logits"], dtype=np.float64)
        ref = p["_logits64"].numpy()
        rng = float(ref.max() - ref.min())
        for layer in model.model.layers:
            layer.mlp.act_fn = _GeluF16Table()
        tab = mf.last_logits(model, p["ids"]).numpy()
        for layer, a in zip(model.model.layers, acts):
            layer.mlp.act_fn = a
        exact.append(float(np.abs(lg - ref).max() / rng))
        table.append(float(np.abs(lg - tab).max() / rng))
    return {"llamacppF32VsReference": exact, "llamacppF32VsReferenceWithF16TableGelu": table,
            "meaning": "max |logit| difference / logit range of llama.cpp on gemma3-tiny-f32.gguf (F32 K/V cache, "
                       "flash attention off) from the float64 reference, and from the float64 reference with the "
                       "GELU replaced by ggml's CPU one (input rounded to F16, gelu-tanh read from an F16 table): "
                       "most of llama.cpp's remaining gemma3 difference is that table."}


# --------------------------------------------------------------------------------------
# per-model drivers


def versions(lcpp: LlamaCpp | None) -> dict[str, str]:
    v = {"torch": torch.__version__, "transformers": transformers.__version__, "gguf": mf._pkg_version("gguf"),
         "safetensors": safetensors.__version__, "tokenizers": tokenizers.__version__, "numpy": np.__version__}
    if lcpp is not None:
        v["nodeLlamaCpp"] = lcpp.version
        v["llamaCpp"] = LLAMACPP_COMMIT
    return v


def config_summary(cfg: Any) -> dict[str, Any]:
    out = {"model_type": cfg.model_type, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
           "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
           "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
           "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
           "rope_parameters": json.loads(json.dumps(cfg.rope_parameters)), "rms_norm_eps": cfg.rms_norm_eps,
           "tie_word_embeddings": cfg.tie_word_embeddings, "max_position_embeddings": cfg.max_position_embeddings}
    for k in ("layer_types", "sliding_window", "query_pre_attn_scalar", "hidden_activation", "no_rope_layers",
              "original_max_position_embeddings", "final_logit_softcapping", "attn_logit_softcapping"):
        if hasattr(cfg, k) and getattr(cfg, k) is not None:
            out[k] = getattr(cfg, k)
    return out


def float32_checks(hf_dir: Path, sds: dict[str, dict[str, torch.Tensor]], overrides: dict[str, dict[str, Any]],
                   prompts: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out = {}
    for v, sd in sds.items():
        m32 = load_model(hf_dir, sd, overrides.get(v, {}), torch.float32, f64=False)
        out[v] = [mf.float32_check(m32, p, p["_logits64"]) for p in prompts[v]]
        log(f"  float32+KV-cache vs float64 [{v}]: max |dlogit| {max(c['maxAbsDiff'] for c in out[v]):.2e}, "
            f"greedy match {[c['greedyMatches'] for c in out[v]]}")
    return out


def patch_delta(hf_dir: Path, sd: dict[str, torch.Tensor], overrides: dict[str, Any], patched: torch.nn.Module) -> float:
    stock = load_model(hf_dir, sd, overrides, torch.float64, f64=False)
    probe = [BOS_ID] + list(range(100, 140))
    with torch.no_grad():
        a = stock(input_ids=torch.tensor([probe]), use_cache=False).logits[0, -1]
    b = mf.last_logits(patched, probe)
    return float((a - b).abs().max())


def tokenizer_check(lcpp: LlamaCpp, gguf_path: Path, tok: Any) -> dict[str, Any]:
    texts = list(mf.TOKENIZER_CORPUS) + list(mf.PASSAGES)
    got = lcpp.call({"op": "tokenize", "model": str(gguf_path), "texts": texts})["ids"]
    mism = []
    dec_mism = []
    want_all = []
    for t, g in zip(texts, got):
        want = tok(t, add_special_tokens=False)["input_ids"]
        want_all.append(want)
        if want != g:
            mism.append({"text": t, "transformers": want, "llamacpp": g})
    dec = lcpp.call({"op": "detokenize", "model": str(gguf_path), "ids": want_all})["texts"]
    for t, ids, d in zip(texts, want_all, dec):
        hd = tok.decode(ids, clean_up_tokenization_spaces=False)
        if hd != d:
            dec_mism.append({"text": t, "transformers": hd, "llamacpp": d})
    return {"texts": len(texts), "encodeMismatches": mism, "decodeMismatches": dec_mism,
            "how": "node-llama-cpp model.tokenize(text, true) vs transformers tokenizer(text, "
                   "add_special_tokens=False); detokenize(ids, true) vs decode(ids) - on make_fixtures' 31-string "
                   "tokenizer corpus plus its 10 passages"}


def write_reference(mdir: Path, ref: dict[str, Any]) -> None:
    mf.dump_json(mdir / "reference.json", ref)


def process_arch(spec: dict[str, Any], assets: Path, out_root: Path, llama_cpp: Path,
                 lcpp: LlamaCpp | None) -> None:
    name = spec["name"]
    mdir = out_root / "models" / name
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True)
    log(f"== {name}")
    cfg = spec["config"]
    model = build_model(spec)
    hf_variant = f"hf-{spec['hf_dtype']}"
    hf_dir = mdir / hf_variant
    mf.save_hf(model, hf_dir, assets, None)
    variants: dict[str, dict[str, Any]] = {hf_variant: {"path": mf.rel(hf_dir), "format": "hf",
                                                        "dtype": spec["hf_dtype"]}}
    hf_sd = {k: v.to(torch.float64) for k, v in mf.read_safetensors_dir(hf_dir).items()}
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in hf_sd
        hf_sd["lm_head.weight"] = hf_sd["model.embed_tokens.weight"]
    sds = {hf_variant: hf_sd}
    overrides: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    conversion: dict[str, Any] = {}
    layout: dict[str, Any] = {}
    norm_shift_note = None
    for kind in spec["gguf_types"]:
        gpath = mdir / f"{name}-{kind}.gguf"
        conversion[f"gguf-{kind}"] = convert(llama_cpp, hf_dir, gpath, kind, name)
        v = f"gguf-{kind}"
        variants[v] = {"path": mf.rel(gpath), "format": "gguf", "dtype": kind, "tensorTypes": tensor_types(gpath)}
        sds[v] = gguf_state_dict(spec, gpath, list(hf_sd))
        files[v] = gpath
        layout[v] = mf.gguf_summary(gpath)
        if spec["gguf_arch"] == "gemma3":
            # llama.cpp's gemma3 ignores query_pre_attn_scalar (not in the GGUF): it scales q by
            # 1/sqrt(key_length) (1/sqrt(n_embd/n_head) only for the 62-layer 27B)
            overrides[v] = {"query_pre_attn_scalar": cfg.head_dim}
        if kind == "f32":
            for k in hf_sd:
                d = float((sds[v][k] - hf_sd[k]).abs().max())
                if spec["gguf_arch"] == "gemma3" and k.endswith("norm.weight"):
                    norm_shift_note = max(norm_shift_note or 0.0, d)
                else:
                    assert d == 0.0, (k, d)
    if norm_shift_note is not None:
        log(f"  gemma3 norm weights: |(GGUF - 1) - HF| max {norm_shift_note:.3e}")

    models = {v: load_model(hf_dir, sd, overrides.get(v, {}), torch.float64) for v, sd in sds.items()}
    for v in models:
        pd = patch_delta(hf_dir, sds[v], overrides.get(v, {}), models[v])
        assert pd < 1e-3, (v, pd)
        if v == hf_variant:
            log(f"  float64 patch delta vs stock transformers (float32 norm/softmax/rope): {pd:.3e}")
            patch = pd

    tok = AutoTokenizer.from_pretrained(hf_dir)
    prompts, chosen, disagreements = select_prompts(tok, models, files, lcpp, name)

    observed: dict[str, Any] = {}
    tok_check = None
    if files:
        tok_check = tokenizer_check(lcpp, next(iter(files.values())), tok)
        log(f"  tokenizer check: {len(tok_check['encodeMismatches'])} encode / "
            f"{len(tok_check['decodeMismatches'])} decode mismatches of {tok_check['texts']}")
    if spec["gguf_arch"] == "gemma3":
        observed["slidingWindow"] = observe_sliding_window(hf_dir, hf_sd, cfg.sliding_window)
        log(f"  sliding window probe: {observed['slidingWindow']['logitChangeWhenTokenAtDistanceWMinus1Changes']:.3e} "
            f"/ {observed['slidingWindow']['logitChangeWhenTokenAtDistanceWChanges']:.3e}")
        # what llama.cpp's logits are closer to: the HF config's scalar or head_dim
        v = "gguf-f32"
        m_hf_scale = load_model(hf_dir, sds[v], {}, torch.float64)
        d_hf, d_hd = [], []
        for p in prompts[v]:
            out = lcpp.run(files[v], p["ids"])
            lg = torch.tensor(out["logits"], dtype=torch.float64)
            d_hf.append(float((lg - mf.last_logits(m_hf_scale, p["ids"])).abs().max()))
            d_hd.append(float((lg - p["_logits64"]).abs().max()))
        observed["attentionScaleInLlamaCpp"] = {
            "llamacppVsReferenceWithQueryPreAttnScalar48": d_hf, "llamacppVsReferenceWithScalarEqualHeadDim": d_hd,
            "meaning": "max |logit| difference of llama.cpp (gguf-f32) from transformers float64 with the HF "
                       "config's query_pre_attn_scalar (48) vs with query_pre_attn_scalar = head_dim (32): the GGUF "
                       "carries no such key and llama.cpp uses 1/sqrt(head_dim). GGUF references therefore use "
                       "query_pre_attn_scalar = head_dim (variant.referenceConfigOverrides)."}
        observed["llamacppGelu"] = observe_llamacpp_gelu(models[v], prompts[v], files[v], lcpp)
        log(f"  llama.cpp GELU table: {observed['llamacppGelu']['llamacppF32VsReference']} -> "
            f"{observed['llamacppGelu']['llamacppF32VsReferenceWithF16TableGelu']}")
        observed["embeddingScale"] = {"value": cfg.hidden_size ** 0.5,
                                      "meaning": "transformers multiplies the embedding rows by sqrt(hidden_size), a "
                                                 "buffer cast to the weight dtype (bf16 here: 8.0 is exact); llama.cpp "
                                                 "scales by sqrtf(n_embd) in f32"}

    f32 = float32_checks(hf_dir, sds, overrides, prompts)
    diffs = {v: mf.diff_vs(prompts[hf_variant], prompts[v]) for v in sds if v != hf_variant}
    for v in variants:
        variants[v]["prompts"] = [strip_internal(p) for p in prompts[v]]
        if v in overrides:
            variants[v]["referenceConfigOverrides"] = overrides[v]

    notes = [
        "Every variant's reference is transformers in float64 (RMSNorm, softmax and RoPE patched to float64) on "
        "exactly the weights that variant stores: HF BF16 upcast; GGUF read back with gguf.GGUFReader, dequantized "
        "with gguf.quants.dequantize and the converter's transforms undone (gemma3 norm weights - 1, smollm3 Q/K "
        "rows un-permuted).",
        "GGUF files are llama.cpp's own convert_hf_to_gguf.py output (build " + LLAMACPP_COMMIT + "), run through "
        "tools/reference/llamacpp_convert.py, which only answers 'smollm' where the converter does not know the "
        "tokenizer's pre-tokenizer hash (cokv-retrieval-tiny's BPE; same split as SmolLM's). tokenizerCheck "
        "compares llama.cpp's tokenization with transformers'.",
        "llamacppGreedy: llama.cpp's own 32 greedy tokens for the same prompt ids (node-llama-cpp 3.22.1 "
        "context.getSequence().evaluate(ids, {temperature: 0, yieldEogToken: true}), CPU, 1 thread, defaults: F16 K/V "
        "cache, flash attention auto). Prompts are chosen so that llamacppGreedy == greedy in every GGUF variant "
        "(llamacppGreedyAgree = 32). llamacppMaxAbsDiff / llamacppMaxRelDiff: llama.cpp's raw last-prompt-position "
        "logits (controlledEvaluate, same defaults) vs the float64 logits (/ float64 logit range); "
        "llamacppF32MaxRelDiff: the same with an F32 K/V cache and flash attention off. llamacppDisagreements lists "
        "candidate prompts rejected because the two greedy runs differed.",
        "logits: last prompt position, all ids, 6 significant digits; greedy: 32 argmax tokens, full recompute per "
        "step, no EOS stop; margins / minMargin / minRelMargin as in make_fixtures.py.",
    ] + spec_notes(spec)
    ref: dict[str, Any] = {
        "model": name, "generator": GENERATOR, "versions": versions(lcpp if files else None),
        "architecture": type(model).__name__, "config": config_summary(cfg), "baseline": hf_variant,
        "greedySteps": GREEDY_STEPS, "relMarginThreshold": REL_MARGIN, "promptSource": chosen,
        "variants": variants, "diffVsBaseline": diffs, "float32Check": f32, "float64PatchDelta": patch,
        "ggufLayout": layout, "conversion": conversion, "observed": observed,
        "notes": notes,
    }
    if files:
        ref["tokenizerCheck"] = tok_check
        ref["llamacppDisagreements"] = disagreements
    if norm_shift_note is not None:
        ref["gemmaNormRoundTrip"] = {
            "maxAbsDiff": norm_shift_note,
            "meaning": "max |(GGUF F32 norm weight - 1) - HF norm weight| over all gemma3-tiny-f32.gguf norm tensors "
                       "(HF stores w, the converter writes 1 + w as F32; 0 means 1 + w is exact, i.e. the "
                       "converter adds 1 after widening the BF16 values to F32)."}
    write_reference(mdir, ref)


def spec_notes(spec: dict[str, Any]) -> list[str]:
    cfg = spec["config"]
    n = spec["name"]
    if n == "qwen3-tiny":
        return ["qwen3: head_dim 32 (explicit; hidden/heads = 16), so q_proj is 128x64 and o_proj 64x128. "
                "q_norm / k_norm (RMSNorm over head_dim, weights 2 (1 + 0.3 N(0,1))) per head before RoPE. The GGUF has "
                "attention.key_length / value_length 32 and attn_q_norm / attn_k_norm; no Q/K permutation."]
    if n == "gemma3-tiny":
        return ["gemma3: embeddings scaled by sqrt(64) = 8; every RMSNorm (input, post_attention, "
                "pre_feedforward, post_feedforward, q_norm, k_norm, final) multiplies by (1 + weight): HF stores the "
                "offset w (effective multipliers 1 + w: 1 + 0.1 N(0,1); q/k norms 2 (1 + 0.3 N(0,1)); post-attention "
                "and post-feedforward norms 6 (1 + 0.1 N(0,1))), the GGUF stores 1 + w (converter adds 1). GeGLU with "
                "gelu tanh approximation; q_norm/k_norm before RoPE; post-attention and post-feedforward norms before "
                "the residual adds.",
                "layer_types = 5 x sliding_attention + full_attention (layer 5); sliding_window 16 (keys q-15..q); "
                "sliding layers use rope_parameters.sliding_attention.rope_theta = 40000 (GGUF rope.freq_base_swa), "
                "the full layer 1e6 (rope.freq_base).",
                "query_pre_attn_scalar 48 != head_dim 32: HF scales scores by 48^-0.5. The GGUF cannot say this and "
                "llama.cpp uses head_dim^-0.5, so GGUF variants' references use query_pre_attn_scalar = 32 "
                "(referenceConfigOverrides; observed.attentionScaleInLlamaCpp measures both)."]
    if n == "smollm3-tiny":
        return ["smollm3: no_rope_layers = [1, 1, 1, 0] (1 = the layer applies RoPE, 0 = NoPE): layer 3 has no "
                "rotary embedding at all. llama.cpp hard-codes NoPE on every 4th layer ((il + 1) % 4 == 0) and "
                "the GGUF carries no per-layer list. arch smollm3 GGUFs have llama's Q/K row permutation."]
    if n == "phi3-tiny":
        return ["phi3: fused self_attn.qkv_proj (rows: q [0,64), k [64,96), v [96,128)) and mlp.gate_up_proj "
                "(rows: gate [0,128), up [128,256); out = down(silu(gate) * up)). partial_rotary_factor 0.5 (in "
                "rope_parameters): rotary over the first 8 of 16 dims per head, rotate_half within them (pairs "
                "(i, i+4)), dims 8..15 pass through. Untied lm_head. HF only (the converter wants a SentencePiece "
                "tokenizer.model for phi3)."]
    if n == "phi4mini-tiny":
        rp = cfg.rope_parameters
        att = rope_inv_freq_f64(cfg, rp, 1)[1]
        return ["phi4mini: Phi3ForCausalLM with Phi-4-mini's rope: rope_type longrope, partial_rotary_factor 0.75 "
                "(rotary over the first 24 of 32 dims per head), theta 10000, 12 short_factor / long_factor "
                "entries, original_max_position_embeddings 4096, max_position_embeddings 131072, tied embeddings.",
                "Every prompt + 32 steps (<= 132 positions) is below original_max_position_embeddings 4096, so "
                "transformers uses short_factor: inv_freq[i] = 1 / (short_factor[i] * 10000^(2i/24)).",
                f"longrope attention factor = sqrt(1 + ln(131072/4096) / ln(4096)) = {att!r}; transformers "
                "multiplies both cos and sin by it (so q.k scores grow by its square) whether short or long factors "
                "are in use. HF only."]
    return []


def process_quant(spec: dict[str, Any], assets: Path, out_root: Path, llama_cpp: Path, lcpp: LlamaCpp,
                  keep_tmp: bool) -> None:
    name = spec["name"]
    cfg = spec["config"]
    mdir = out_root / "models" / name
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True)
    log(f"== {name}")
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        model = build_model(spec)
        hf_dir = tmp / "hf-f32"
        mf.save_hf(model, hf_dir, assets, None)
        src = tmp / f"{name}-f32.gguf"
        conversion: dict[str, Any] = {"source": convert(llama_cpp, hf_dir, src, "f32", name)}
        hf_sd = {k: v.to(torch.float64) for k, v in mf.read_safetensors_dir(hf_dir).items()}
        hf_sd["lm_head.weight"] = hf_sd["model.embed_tokens.weight"]
        src_sd = gguf_state_dict(spec, src, list(hf_sd))
        assert all(torch.equal(src_sd[k], hf_sd[k]) for k in hf_sd)
        src_model = load_model(hf_dir, src_sd, {}, torch.float64)
        pd = patch_delta(hf_dir, src_sd, {}, src_model)
        assert pd < 1e-3
        log(f"  float64 patch delta: {pd:.3e}")
        tok = AutoTokenizer.from_pretrained(hf_dir)
        tok_check = tokenizer_check(lcpp, src, tok)
        log(f"  tokenizer check: {len(tok_check['encodeMismatches'])} encode / "
            f"{len(tok_check['decodeMismatches'])} decode mismatches of {tok_check['texts']}")

        variants: dict[str, Any] = {}
        layout: dict[str, Any] = {}
        diff_src: dict[str, Any] = {}
        search: dict[str, Any] = {}
        disagreements: dict[str, Any] = {}
        f32: dict[str, Any] = {}
        src_llamacpp: dict[str, Any] = {}
        for preset in QUANT_PRESETS:
            kind = preset.lower()
            v = f"gguf-{kind}"
            gpath = mdir / f"{name}-{kind}.gguf"
            conversion[v] = quantize(llama_cpp, src, gpath, preset)
            sd = gguf_state_dict(spec, gpath, list(hf_sd))
            m = load_model(hf_dir, sd, {}, torch.float64)
            # prompts chosen per file: decisive in float64 and llama.cpp's greedy run equal to the float64 one
            ps, chosen, dis = select_prompts_quant(tok, m, gpath, lcpp, f"{name} {preset}")
            src_res = [run_prompt(src_model, p["ids"]) for p in ps]
            diff_src[v] = mf.diff_vs(src_res, ps)
            for p in src_res:
                if json.dumps(p["ids"]) not in src_llamacpp:
                    out = lcpp.run(src, p["ids"])
                    lg = np.asarray(out["logits"])
                    ref = p["_logits64"].numpy()
                    src_llamacpp[json.dumps(p["ids"])] = {
                        "length": len(p["ids"]), "llamacppMaxAbsDiff": float(np.abs(lg - ref).max()),
                        "llamacppMaxRelDiff": float(np.abs(lg - ref).max() / (ref.max() - ref.min())),
                        "greedyEqual": out["greedy"] == p["greedy"]}
            m32 = load_model(hf_dir, sd, {}, torch.float32, f64=False)
            f32[v] = [mf.float32_check(m32, p, p["_logits64"]) for p in ps]
            variants[v] = {"path": mf.rel(gpath), "format": "gguf", "dtype": kind, "quantizePreset": preset,
                           "tensorTypes": tensor_types(gpath), "prompts": [strip_internal(p) for p in ps]}
            layout[v] = mf.gguf_summary(gpath)
            search[v] = chosen
            disagreements[v] = dis
            mix = sorted(set(variants[v]["tensorTypes"].values()))
            log(f"  {preset}: {gpath.stat().st_size:,} bytes, types {mix}, llama.cpp max rel diff "
                f"{max(p['llamacppMaxRelDiff'] for p in ps):.2e}, vs source {diff_src[v]['maxAbsDiff']:.3f}")

        ref: dict[str, Any] = {
            "model": name, "generator": GENERATOR, "versions": versions(lcpp),
            "architecture": type(model).__name__, "config": config_summary(cfg), "baseline": None,
            "greedySteps": GREEDY_STEPS, "relMarginThreshold": REL_MARGIN, "promptSource": search,
            "variants": variants, "diffVsSource": diff_src, "float32Check": f32, "float64PatchDelta": pd,
            "llamacppOnSource": list(src_llamacpp.values()), "ggufLayout": layout, "conversion": conversion,
            "tokenizerCheck": tok_check, "llamacppDisagreements": disagreements,
            "notes": [
                "Quantization fixture: the F32 source (HF folder and converter F32 GGUF) is not committed. It is "
                "written to a temporary folder, converted with llama.cpp's convert_hf_to_gguf.py (through "
                "tools/reference/llamacpp_convert.py) and shrunk with llama.cpp's llama-quantize for each preset "
                "(no imatrix, 1 thread). tensorTypes is the per-tensor mix llama-quantize chose.",
                "Each variant's reference is transformers float64 (norm/softmax/RoPE patched to float64) on that "
                "file's weights: gguf.quants.dequantize, Q/K rows un-permuted (arch llama). llamacppGreedy is "
                "llama.cpp's own greedy run on the file (node-llama-cpp, CPU, 1 thread).",
                "Prompts are chosen per file (first window of the candidate list, per length, that is decisive in "
                "float64 and where llama.cpp's 32 greedy tokens equal the float64 ones); promptSource[variant] "
                "says which window and how many were rejected; llamacppDisagreements[variant] lists the rejected "
                "windows where llama.cpp's greedy run differed.",
                "llamacppMaxAbsDiff / llamacppMaxRelDiff per prompt: llama.cpp's raw logits vs the float64 "
                "reference on the same dequantized weights. llama.cpp's CPU kernels quantize the activations to "
                "Q8_0/Q8_K for quantized dot products (and the KV cache is F16), so this is larger than the f32 "
                "arithmetic error of an engine that dequantizes the weights exactly; llamacppOnSource gives the "
                "same measure for the F32 source file.",
                "diffVsSource: float64 reference of the quantized weights vs float64 reference of the original F32 "
                "weights, on the variant's prompts (the quantization error itself).",
            ],
        }
        write_reference(mdir, ref)
    finally:
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------


def size_summary(root: Path, names: list[str]) -> None:
    log("\n== fixture sizes")
    total = 0
    for n in names:
        d = root / "models" / n
        sub = 0
        for p in sorted(d.rglob("*")):
            if p.is_file():
                sub += p.stat().st_size
                log(f"  {p.stat().st_size:>11,d}  {mf.rel(p)}")
        log(f"  {sub:>11,d}  {n}/")
        total += sub
    log(f"  {total:>11,d}  TOTAL ({total / 1e6:.2f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", help="shared assets folder (default: <repo>/shared/assets or ../shared/assets)")
    ap.add_argument("--llama-cpp", default="/tmp/llama.cpp", help="llama.cpp checkout with build/bin/llama-quantize")
    ap.add_argument("--nlc", default="/tmp/nlc/node_modules/node-llama-cpp", help="node-llama-cpp package folder")
    ap.add_argument("--only", nargs="*", help="only these models")
    ap.add_argument("--out", default=str(mf.FIXTURES), help="output root (default test/fixtures)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the quantized models' F32 sources")
    ap.add_argument("--presets", nargs="*", help="only these llama-quantize presets (for trying things out)")
    args = ap.parse_args()
    if args.presets:
        QUANT_PRESETS[:] = [p for p in QUANT_PRESETS if p in args.presets]

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assets = mf.find_assets(args.assets)
    out_root = Path(args.out).resolve()
    llama_cpp = Path(args.llama_cpp).resolve()
    lcpp = LlamaCpp(Path(args.nlc).resolve())
    names = []
    try:
        for spec in arch_specs():
            if args.only and spec["name"] not in args.only:
                continue
            process_arch(spec, assets, out_root, llama_cpp, lcpp)
            names.append(spec["name"])
        for spec in quant_specs():
            if args.only and spec["name"] not in args.only:
                continue
            process_quant(spec, assets, out_root, llama_cpp, lcpp, args.keep_tmp)
            names.append(spec["name"])
    finally:
        lcpp.close()
    size_summary(out_root, names)


if __name__ == "__main__":
    sys.exit(main())
