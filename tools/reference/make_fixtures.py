#!/usr/bin/env python3
"""Generate the small random-weight model fixtures and their float64 reference
outputs under test/fixtures/.

Run from anywhere (paths are resolved from this file's location):

    /work/venv-ref/bin/python tools/reference/make_fixtures.py

Needs: torch (CPU), transformers (5.x), safetensors, tokenizers, gguf, numpy.
The TypeScript tests never run this; they only read what it wrote.

Everything is deterministic: fixed torch generators, no timestamps, sorted JSON
keys where the order is not meaningful.  Running it twice gives identical files
(for the same library versions, which are recorded in each reference.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gguf  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

try:  # progress bars from save_pretrained would make the log noisy
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "test" / "fixtures"

VOCAB = 2048
BOS_ID, EOS_ID, UNK_ID, PAD_ID = 0, 1, 2, 3
GREEDY_STEPS = 32
TOP_K = 50
# A greedy step is "decisive" when top1 - top2 >= REL_MARGIN * (max - min logit).
REL_MARGIN = 1e-3
PROMPT_LENGTHS = (12, 40, 100)  # total ids, BOS included

# Init scales.  The usual std 0.02 gives near-uniform logits, and plain 1/sqrt(fan_in)
# with tied embeddings makes greedy decoding repeat one token forever.  These gains give
# decisive logits (range ~20-30) AND varied greedy continuations (20-32 distinct tokens
# in 32 steps), so a KV-cache bug cannot hide behind a constant output.
EMBED_GAIN = 3.0  # embedding / lm_head std = EMBED_GAIN / sqrt(hidden)
LINEAR_GAINS = {  # other matrices: std = gain / sqrt(fan_in)
    "q_proj": 2.0, "k_proj": 2.0,  # sharper attention, so context matters
    "v_proj": 2.0, "o_proj": 2.0,  # attention output outweighs the token's own embedding
    "gate_proj": 1.0, "up_proj": 2.0, "down_proj": 2.0,
}
NORM_JITTER = 0.1  # norm weights = 1 + NORM_JITTER * N(0, 1)
BIAS_STD = 0.3  # q/k/v biases (qwen2)
# Candidate prompt windows: passage p, starting at token offset o (o in PROMPT_OFFSETS).
PROMPT_OFFSETS = (0, 17, 33, 5, 11, 25)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
CHAT_MESSAGES_2 = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
CHAT_MESSAGES_3 = [
    {"role": "system", "content": "You are a helpful AI assistant named SmolLM."},
    {"role": "user", "content": "Hello! Can you count to three?"},
    {"role": "assistant", "content": "Sure: one, two, three."},
]

# Real English text; prompts are BOS + the first (L-1) ids of one passage.
# Candidates are tried in order until every greedy step of every variant of the
# model is decisive (see REL_MARGIN).
PASSAGES = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp. "
    "Ships passing in the night relied on its steady beam to find their way around the rocky point. "
    "One winter a storm knocked out the power for three days, and he kept the light burning with oil lamps "
    "and a mirror he had polished until it shone like silver. The village never forgot what he did for them, "
    "and every year on the first cold night they gathered at the foot of the tower to thank him.",
    "Photosynthesis is the process by which green plants use sunlight to turn water and carbon dioxide into sugar "
    "and oxygen. It takes place mostly in the leaves, inside small structures called chloroplasts. The sugar feeds "
    "the plant and is stored in roots, stems and fruit, while the oxygen is released into the air that animals "
    "breathe. Without this quiet chemistry there would be almost no life on land or in the upper layers of the sea.",
    "In 1969 two astronauts walked on the surface of the Moon while a third circled above them in the command module. "
    "They collected rocks, set up experiments and planted a flag before returning to Earth. Millions of people "
    "watched the grainy pictures on television, and many of them still remember exactly where they were that day. "
    "The mission showed what careful planning, hard work and a great deal of courage could achieve together.",
    "To make a simple loaf of bread, mix flour, water, salt and a little yeast in a large bowl. Knead the dough for "
    "ten minutes until it is smooth, then cover it and leave it in a warm place to rise. After an hour, shape it "
    "into a loaf, let it rise again, and bake it in a hot oven until the crust is golden brown and the bottom "
    "sounds hollow when you tap it. Let it cool before cutting, or the inside will be gummy.",
    "The city council met on Tuesday to discuss the new park on the east side of the river. Residents asked for more "
    "trees, a playground and a path for bicycles, while some business owners worried about parking. After a long "
    "debate the council voted to fund the first stage of the project, and work is expected to begin in the spring. "
    "A second meeting will decide how the rest of the money should be spent over the next five years.",
    "She opened the letter slowly, afraid of what it might say. The paper was thin and the ink had faded, but the "
    "handwriting was unmistakably her grandmother's. It described a small house by the sea, a garden full of roses "
    "and a key hidden under the third stone of the garden wall. By the time she reached the last line, her hands "
    "were shaking, because she knew exactly which house the letter meant.",
    "Rivers carry water from the mountains to the sea, shaping the land as they go. Over thousands of years they cut "
    "deep valleys, build wide plains and leave rich soil where farmers grow their crops. Many of the great cities "
    "of the world were founded on the banks of a river, because it provided drinking water, food and an easy way "
    "to move goods from one place to another long before there were roads or railways.",
    "The small robot rolled across the kitchen floor, looking for crumbs. It had been built by a group of students "
    "who wanted to see whether a machine could learn to clean without being told where to go. At first it bumped "
    "into every chair and got stuck under the table, but after a few weeks it knew the room better than the cat did "
    "and finished its rounds before anyone in the house woke up.",
    "Every morning the market square filled with traders selling fruit, fish, cheese and bread. Children ran between "
    "the stalls while their parents argued about prices and swapped news from the nearby villages. By noon the "
    "square was empty again except for the pigeons, who searched the stones for anything the traders had left "
    "behind, and an old man who swept the corners with a broom made of straw.",
    "Learning a new language takes patience. At first every sentence feels like a puzzle, and even simple "
    "questions can be hard to answer. With practice the words begin to come more easily, and one day you realise "
    "that you have been thinking in the new language without noticing. Reading books, listening to songs and "
    "talking with friends all help, but the most important thing is to keep going when it feels slow.",
]

# Mixed corpus for the tokenizer fixtures.
TOKENIZER_CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo, ça va? Où est la bibliothèque? Les élèves étaient très fatigués à l'école.",
    "Größe, Übergröße und Straße: Die Bären fraßen süße Äpfel.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "function add(a, b) {\n\treturn a + b;\n}\nconsole.log(add(1, 2)); // => 3\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "class Foo:\n    def __init__(self):\n        self.x = {'a': [1, 2, 3]}\n\n\n    # comment\n",
    "Emoji: 😀 🎉 👍🏽 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "multiple   spaces    here     and\ttabs\t\tand\t \tmixed",
    "line one\n\n\nline four\n\n\n\n\nline nine",
    "windows\r\nline\r\nendings\r\n",
    "Numbers: 1234567890 3.14159265358979 -42 1,000,000 0x1F 2024-06-01",
    "https://example.com/path/to/page?query=value&other=123#fragment",
    "",
    " ",
    "  ",
    "\n",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<s>Hello</s> <pad> <unk> <|endoftext|>",
    "   leading and trailing spaces   ",
    "ALL CAPS SHOUTING AND MiXeD CaSe",
    "Punctuation!!! ??? ... --- ;;; ::: (((nested))) [[brackets]] {{braces}}",
    "Tabs\tand\tnewlines\nmixed\t\n\t\nfinal",
    "Ünïcödé ñ ß ø å æ œ ĳ ﬁ ligatures and combining: e\u0301 a\u0308",
    "Mathematics: ∑ ∫ √ ≤ ≥ ≠ ∞ π ≈ 𝔸 𝕏",
    "I'm can't won't they're we've you'll he'd",
    "a" * 60,
    "12345678901234567890123456789012345678901234567890",
    "Ελληνικά και Русский текст, עברית, العربية",
]


# --------------------------------------------------------------------------------------
# helpers


def log(*a: Any) -> None:
    print(*a, flush=True)


def sig6(x: float) -> float:
    return float(f"{x:.6g}")


def _is_flat(x: Any) -> bool:
    return isinstance(x, list) and all(
        isinstance(e, (int, float)) or (isinstance(e, list) and all(isinstance(f, (int, float)) for f in e))
        for e in x)


def _fmt(x: Any, ind: int) -> str:
    """JSON with indentation, but numeric arrays (and arrays of numeric pairs) on one line."""
    pad, pad1 = " " * ind, " " * (ind + 1)
    if isinstance(x, dict):
        if not x:
            return "{}"
        items = [f"{pad1}{json.dumps(k, ensure_ascii=False)}: {_fmt(v, ind + 1)}" for k, v in x.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(x, list):
        if _is_flat(x):
            return json.dumps(x, ensure_ascii=False, separators=(", ", ": "))
        items = [pad1 + _fmt(v, ind + 1) for v in x]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(x, ensure_ascii=False)


def diff_vs(base: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """How far one variant's float64 reference is from another's (same prompts): max |dlogit|, range, greedy prefix agreement."""
    per = []
    for a, b in zip(base, other):
        assert a["ids"] == b["ids"]
        d = float((a["_logits64"] - b["_logits64"]).abs().max())
        rng = float(a["_logits64"].max() - a["_logits64"].min())
        agree = 0
        for x, y in zip(a["greedy"], b["greedy"]):
            if x != y:
                break
            agree += 1
        per.append({"maxAbsDiff": d, "logitRange": rng, "greedyPrefixAgree": agree})
    return {"maxAbsDiff": max(p["maxAbsDiff"] for p in per), "perPrompt": per}


def dump_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _fmt(obj, 0)
    assert json.loads(text) == obj
    path.write_text(text + "\n", encoding="utf-8")


def rel(p: Path) -> str:
    try:
        return p.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return p.resolve().as_posix()


def find_assets(arg: str | None) -> Path:
    cands = [Path(arg)] if arg else [REPO / "shared" / "assets", REPO.parent / "shared" / "assets"]
    for c in cands:
        if (c / "models" / "cokv-retrieval-tiny" / "tokenizer.json").is_file():
            return c
    raise SystemExit(f"cannot find shared assets in {cands}; pass --assets")


# --------------------------------------------------------------------------------------
# float64 reference: transformers computes RMSNorm, softmax and RoPE in float32 even when
# the model is float64.  These patches make those three steps float64 too.


def _rmsnorm_forward_f64(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    x = hidden_states.to(torch.float64)
    var = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(var + self.variance_epsilon)
    return self.weight.to(torch.float64) * x


def inv_freq_f64(cfg: Any) -> torch.Tensor:
    rp = cfg.rope_parameters
    base = float(rp["rope_theta"])
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if rp.get("rope_type", "default") == "default":
        return inv
    assert rp["rope_type"] == "llama3", rp
    factor = float(rp["factor"])
    lo, hi = float(rp["low_freq_factor"]), float(rp["high_freq_factor"])
    old = float(rp["original_max_position_embeddings"])
    lo_wl, hi_wl = old / lo, old / hi
    wl = 2 * math.pi / inv
    out = torch.where(wl > lo_wl, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = (wl >= hi_wl) & (wl <= lo_wl)
    return torch.where(medium, smoothed, out)


def rope_factors_llama3(cfg: Any) -> np.ndarray:
    """llama.cpp's rope_freqs tensor for llama3 scaling: per rotary pair, the divisor
    applied to the base frequency (1 = unchanged, `factor` = fully scaled).  Written from
    the rope_parameters block (original_max_position_embeddings there, 64 for llama3-tiny)."""
    rp = cfg.rope_parameters
    base = float(rp["rope_theta"])
    dim = cfg.head_dim
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor = float(rp["factor"])
    lo, hi = float(rp["low_freq_factor"]), float(rp["high_freq_factor"])
    old = float(rp["original_max_position_embeddings"])
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < old / hi:
            out.append(1.0)
        elif wl > old / lo:
            out.append(factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.asarray(out, dtype=np.float32)


def make_rotary_forward_f64(module: torch.nn.Module, cfg: Any) -> Callable:
    inv = inv_freq_f64(cfg)
    hf = module.inv_freq.detach().to(torch.float64)
    assert torch.allclose(inv, hf, rtol=1e-6, atol=0), (inv, hf)
    scaling = float(getattr(module, "attention_scaling", 1.0))

    @torch.no_grad()
    def forward(x: torch.Tensor, position_ids: torch.Tensor):
        freqs = position_ids[:, :, None].to(torch.float64) * inv[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)

    return forward


_orig_softmax = F.softmax


def _softmax_f64(input: torch.Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None):
    if input.dtype == torch.float64 and dtype == torch.float32:
        dtype = torch.float64
    return _orig_softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)


@contextlib.contextmanager
def float64_softmax():
    F.softmax = _softmax_f64
    torch.nn.functional.softmax = _softmax_f64
    try:
        yield
    finally:
        F.softmax = _orig_softmax
        torch.nn.functional.softmax = _orig_softmax


def make_f64(model: torch.nn.Module) -> torch.nn.Module:
    model = model.to(torch.float64).eval()
    cfg = model.config
    for m in model.modules():
        name = type(m).__name__
        if name.endswith("RMSNorm"):
            m.forward = _rmsnorm_forward_f64.__get__(m)
        elif name.endswith("RotaryEmbedding"):
            m.forward = make_rotary_forward_f64(m, cfg)
    return model


@torch.no_grad()
def last_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with float64_softmax():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0, -1].to(torch.float64)


@torch.no_grad()
def run_prompt(model: torch.nn.Module, ids: list[int]) -> dict[str, Any]:
    """Full-recompute greedy decoding in float64 (no KV cache, no EOS stop)."""
    seq = list(ids)
    greedy: list[int] = []
    margins: list[float] = []
    rel_margins: list[float] = []
    first: torch.Tensor | None = None
    for _ in range(GREEDY_STEPS):
        lg = last_logits(model, seq)
        if first is None:
            first = lg.clone()
        top2 = torch.topk(lg, 2)
        tok = int(top2.indices[0])
        m = float(top2.values[0] - top2.values[1])
        rng = float(lg.max() - lg.min())
        greedy.append(tok)
        margins.append(m)
        rel_margins.append(m / rng)
        seq.append(tok)
    assert first is not None
    order = sorted(range(first.numel()), key=lambda i: (-float(first[i]), i))[:TOP_K]
    return {
        "ids": list(ids),
        "top50": [[i, float(first[i])] for i in order],
        "logits": [sig6(float(v)) for v in first],
        "greedy": greedy,
        "minMargin": min(margins),
        "minRelMargin": min(rel_margins),
        "margins": [sig6(m) for m in margins],
        "_logits64": first,  # stripped before writing
    }


@torch.no_grad()
def float32_check(model32: torch.nn.Module, ref: dict[str, Any], first64: torch.Tensor) -> dict[str, Any]:
    """What a float32 engine with a KV cache gets: stock transformers in float32, prompt
    prefill then one token at a time.  Not a reference; it shows the float32 error budget."""
    ids = ref["ids"]
    out = model32(input_ids=torch.tensor([ids]), use_cache=True)
    lg = out.logits[0, -1].to(torch.float64)
    diff = float((lg - first64).abs().max())
    past = out.past_key_values
    greedy = []
    for _ in range(GREEDY_STEPS):
        tok = int(torch.argmax(lg))
        greedy.append(tok)
        out = model32(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        lg = out.logits[0, -1].to(torch.float64)
    return {"maxAbsDiff": diff, "greedyMatches": greedy == ref["greedy"]}


# --------------------------------------------------------------------------------------
# model specs


def llama3_tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
    )


def qwen2_tiny_config() -> Qwen2Config:
    return Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, use_sliding_window=False, sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


def mistral_tiny_config() -> MistralConfig:
    return MistralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


SMOLLM_LAYERS = 2  # --smollm-layers


def smollm2_2l_config(assets: Path) -> LlamaConfig:
    src = json.loads((assets / "tokenizers" / "SmolLM2-135M-Instruct" / "config.json").read_text())
    hidden, heads = src["hidden_size"], src["num_attention_heads"]
    return LlamaConfig(
        vocab_size=VOCAB,  # reduced from 49152
        hidden_size=hidden, intermediate_size=src["intermediate_size"],
        num_hidden_layers=SMOLLM_LAYERS,  # reduced from 30
        num_attention_heads=heads, num_key_value_heads=src["num_key_value_heads"],
        head_dim=hidden // heads, max_position_embeddings=src["max_position_embeddings"],
        rms_norm_eps=src["rms_norm_eps"], tie_word_embeddings=src["tie_word_embeddings"],
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        rope_parameters={"rope_type": "default", "rope_theta": float(src["rope_theta"])},
    )


def model_specs(assets: Path) -> list[dict[str, Any]]:
    return [
        {"name": "llama3-tiny", "cls": LlamaForCausalLM, "config": llama3_tiny_config(), "seed": 1001,
         "hf_dtype": "bf16", "sharded": False, "gguf_arch": "llama", "gguf_types": ["f32", "f16", "q8_0"],
         "chat_template": LLAMA3_TEMPLATE},
        {"name": "qwen2-tiny", "cls": Qwen2ForCausalLM, "config": qwen2_tiny_config(), "seed": 2002,
         "hf_dtype": "f16", "sharded": True, "gguf_arch": "qwen2", "gguf_types": ["f32", "f16", "q8_0"],
         "chat_template": None},
        {"name": "mistral-tiny", "cls": MistralForCausalLM, "config": mistral_tiny_config(), "seed": 3003,
         "hf_dtype": "f32", "sharded": False, "gguf_arch": "llama", "gguf_types": ["f32", "f16", "q8_0"],
         "chat_template": None},
        {"name": "smollm2-2l", "cls": LlamaForCausalLM, "config": smollm2_2l_config(assets), "seed": 4004,
         "hf_dtype": "bf16", "sharded": False, "gguf_arch": "llama", "gguf_types": ["q8_0"],
         "chat_template": None},
    ]


TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):
            v = 1.0 + NORM_JITTER * torch.randn(p.shape, generator=g)
        elif name.endswith(".bias"):
            v = BIAS_STD * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in name or name.startswith("lm_head"):
            v = (EMBED_GAIN / math.sqrt(hidden)) * torch.randn(p.shape, generator=g)
        else:
            assert p.dim() == 2, name
            gain = LINEAR_GAINS[name.split(".")[-2]]
            v = (gain / math.sqrt(p.shape[1])) * torch.randn(p.shape, generator=g)
        p.copy_(v.to(p.dtype))


# --------------------------------------------------------------------------------------
# HF folders


def write_tokenizer_files(folder: Path, assets: Path, chat_template: str | None) -> None:
    src = assets / "models" / "cokv-retrieval-tiny"
    shutil.copyfile(src / "tokenizer.json", folder / "tokenizer.json")
    tc = json.loads((src / "tokenizer_config.json").read_text())
    if chat_template is not None:
        tc["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")


def save_hf(model: torch.nn.Module, folder: Path, assets: Path, chat_template: str | None,
            max_shard_size: str | None = None) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    kw: dict[str, Any] = {}
    if max_shard_size is not None:
        kw["max_shard_size"] = max_shard_size
    model.save_pretrained(folder, **kw)
    write_tokenizer_files(folder, assets, chat_template)
    for f in folder.iterdir():  # transformers writes shards 0600
        f.chmod(0o644)


def read_safetensors_dir(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() \
        else ["model.safetensors"]
    out: dict[str, torch.Tensor] = {}
    for fn in files:
        with safe_open(folder / fn, framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


# --------------------------------------------------------------------------------------
# GGUF (laid out like llama.cpp's convert_hf_to_gguf.py)

GGUF_FTYPE = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}

LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_MAP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def hf_to_gguf_name(name: str) -> str:
    if name in TOP_MAP:
        return TOP_MAP[name]
    parts = name.split(".")
    assert parts[0] == "model" and parts[1] == "layers", name
    return f"blk.{int(parts[2])}." + LAYER_MAP[".".join(parts[3:])]


def gguf_to_hf_name(name: str) -> str:
    inv_top = {v: k for k, v in TOP_MAP.items()}
    if name in inv_top:
        return inv_top[name]
    parts = name.split(".")
    assert parts[0] == "blk", name
    inv = {v: k for k, v in LAYER_MAP.items()}
    return f"model.layers.{int(parts[1])}." + inv[".".join(parts[2:])]


def rope_pair_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's GGUF layout for llama Q/K rows: within each head, HF keeps the two
    rotary halves [x0..x(d/2-1) | y0..y(d/2-1)]; GGUF interleaves them as
    [x0 y0 x1 y1 ...] (GPT-J style pairs)."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_pair_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def token_list(tok_json: dict[str, Any]) -> tuple[list[str], list[int]]:
    vocab: dict[str, int] = tok_json["model"]["vocab"]
    added = {t["id"]: t for t in tok_json.get("added_tokens", [])}
    rev = {i: t for t, i in vocab.items()}
    for i, t in added.items():
        rev[i] = t["content"]
    tokens, types = [], []
    for i in range(VOCAB):
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif i in added:
            tokens.append(rev[i])
            types.append(int(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(rev[i])
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types


def write_gguf(spec: dict[str, Any], hf_dir: Path, out: Path, kind: str) -> dict[str, str]:
    cfg = spec["config"]
    arch = spec["gguf_arch"]
    ftype, want = GGUF_FTYPE[kind]
    hparams = json.loads((hf_dir / "config.json").read_text())
    tensors = read_safetensors_dir(hf_dir)

    w = gguf.GGUFWriter(out, arch)
    w.add_type("model")
    w.add_name(spec["name"])
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    if hparams.get("head_dim") is not None:  # the converter writes these whenever config.json has head_dim
        w.add_key_length(int(hparams["head_dim"]))
        w.add_value_length(int(hparams["head_dim"]))
    w.add_file_type(ftype)
    if arch == "llama":
        w.add_vocab_size(cfg.vocab_size)
        w.add_rope_dimension_count(int(hparams.get("head_dim") or cfg.hidden_size // cfg.num_attention_heads))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tok_json = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokens, types = token_list(tok_json)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    sv = gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=VOCAB)
    sv.add_to_gguf(w, quiet=True)

    types_out: dict[str, str] = {}

    def emit(name: str, data: np.ndarray) -> None:
        if data.ndim <= 1 or name.endswith("_norm.weight"):
            qt = gguf.GGMLQuantizationType.F32
        else:
            qt = want
        try:
            raw = gguf.quants.quantize(data, qt)
        except gguf.QuantError:
            qt = gguf.GGMLQuantizationType.F16
            raw = gguf.quants.quantize(data, qt)
        w.add_tensor(name, raw, raw_dtype=qt)
        types_out[name] = qt.name

    rp = cfg.rope_parameters
    if arch == "llama" and rp.get("rope_type") == "llama3":
        emit("rope_freqs.weight", rope_factors_llama3(cfg))

    for name in tensors.keys():  # safetensors header order (sorted), like the converter
        t = tensors[name]
        if t.dtype not in (torch.float16, torch.float32):
            t = t.to(torch.float32)
        data = t.numpy()
        if arch == "llama" and name.endswith("self_attn.q_proj.weight"):
            data = rope_pair_permute(data, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith("self_attn.k_proj.weight"):
            data = rope_pair_permute(data, cfg.num_key_value_heads)
        emit(hf_to_gguf_name(name), np.ascontiguousarray(data))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types_out


def gguf_state_dict(spec: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """Read a GGUF back, dequantize with gguf.quants.dequantize and undo the llama
    Q/K permutation: exactly the weights an engine loading this file holds."""
    cfg = spec["config"]
    arch = spec["gguf_arch"]
    r = gguf.GGUFReader(path)
    sd: dict[str, torch.Tensor] = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            got = np.asarray(t.data, dtype=np.float32)
            assert np.array_equal(got, rope_factors_llama3(cfg)), got
            continue
        deq = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        deq = np.asarray(deq, dtype=np.float32).reshape(shape)
        hf = gguf_to_hf_name(t.name)
        if arch == "llama" and hf.endswith("self_attn.q_proj.weight"):
            deq = rope_pair_unpermute(deq, cfg.num_attention_heads)
        elif arch == "llama" and hf.endswith("self_attn.k_proj.weight"):
            deq = rope_pair_unpermute(deq, cfg.num_key_value_heads)
        sd[hf] = torch.from_numpy(deq.astype(np.float64))
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in sd
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


def gguf_summary(path: Path) -> dict[str, Any]:
    r = gguf.GGUFReader(path)
    kv: dict[str, Any] = {}
    for f in r.fields.values():
        if f.name.startswith("tokenizer.ggml.") and f.name not in (
                "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id"):
            kv[f.name] = f"<array of {len(f.data)}>"
            continue
        if f.name == "tokenizer.chat_template":
            kv[f.name] = f.contents()
            continue
        try:
            kv[f.name] = f.contents()
        except Exception:  # pragma: no cover
            kv[f.name] = "?"
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape.tolist()]}
               for t in r.tensors]
    return {"metadata": kv, "tensors": tensors}


# --------------------------------------------------------------------------------------
# per-model driver


def tokenize_passages(tok: Any) -> list[list[int]]:
    out = []
    for p in PASSAGES:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        assert len(ids) >= max(PROMPT_LENGTHS) - 1, (len(ids), p[:40])
        out.append(ids)
    return out


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(spec["seed"])
    model = spec["cls"](spec["config"])
    init_weights(model, spec["seed"])
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False)
    return model.to(TORCH_DTYPES[spec["hf_dtype"]]).eval()


def load_f64_from_state(spec: dict[str, Any], hf_dir: Path, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float64, attn_implementation="eager")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k == "lm_head.weight" for k in missing), missing
    if spec["config"].tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return make_f64(model)


def process_model(spec: dict[str, Any], assets: Path, out_root: Path) -> dict[str, Any]:
    name = spec["name"]
    mdir = out_root / "models" / name
    if mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True)
    log(f"== {name}")

    model = build_model(spec)
    hf_variant = f"hf-{spec['hf_dtype']}"
    hf_dir = mdir / hf_variant
    save_hf(model, hf_dir, assets, spec["chat_template"])
    variants: dict[str, dict[str, Any]] = {
        hf_variant: {"path": rel(hf_dir), "format": "hf", "dtype": spec["hf_dtype"]},
    }
    if spec["sharded"]:
        sh_dir = mdir / f"{hf_variant}-sharded"
        total = sum(t.numel() * t.element_size() for t in read_safetensors_dir(hf_dir).values())
        save_hf(model, sh_dir, assets, spec["chat_template"], max_shard_size=f"{total * 6 // 10 // 1000}KB")
        shards = sorted(p.name for p in sh_dir.glob("model-*.safetensors"))
        assert len(shards) == 2 and (sh_dir / "model.safetensors.index.json").exists(), shards
        variants[f"{hf_variant}-sharded"] = {"path": rel(sh_dir), "format": "hf", "dtype": spec["hf_dtype"],
                                             "shards": shards}
    gguf_layout: dict[str, Any] = {}
    for kind in spec["gguf_types"]:
        gpath = mdir / f"{name}-{kind}.gguf"
        types = write_gguf(spec, hf_dir, gpath, kind)
        variants[f"gguf-{kind}"] = {"path": rel(gpath), "format": "gguf", "dtype": kind,
                                    "tensorTypes": types}
    # state dicts (float64) per variant
    hf_sd = {k: v.to(torch.float64) for k, v in read_safetensors_dir(hf_dir).items()}
    if spec["config"].tie_word_embeddings:
        hf_sd["lm_head.weight"] = hf_sd["model.embed_tokens.weight"]
    sds: dict[str, dict[str, torch.Tensor]] = {hf_variant: hf_sd}
    if spec["sharded"]:
        sh = {k: v.to(torch.float64) for k, v in read_safetensors_dir(mdir / f"{hf_variant}-sharded").items()}
        assert sh.keys() <= hf_sd.keys() and all(torch.equal(sh[k], hf_sd[k]) for k in sh)
        if spec["config"].tie_word_embeddings:
            sh["lm_head.weight"] = sh["model.embed_tokens.weight"]
        sds[f"{hf_variant}-sharded"] = sh
    for kind in spec["gguf_types"]:
        gpath = mdir / f"{name}-{kind}.gguf"
        sds[f"gguf-{kind}"] = gguf_state_dict(spec, gpath)
        if kind == "f32":  # lossless round trip (bf16/f16/f32 -> f32)
            assert all(torch.equal(sds[f"gguf-{kind}"][k], hf_sd[k]) for k in hf_sd), kind
        gguf_layout[f"gguf-{kind}"] = gguf_summary(gpath)

    # sanity: HF's own loader sees the same weights we use for the HF variant, and the
    # float64 patches only move the result by float32-rounding amounts.
    ref_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float64, attn_implementation="eager").eval()
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, hf_sd[k]), k
    probe = [BOS_ID] + list(range(100, 140))
    with torch.no_grad():
        unpatched = ref_model(input_ids=torch.tensor([probe])).logits[0, -1]
    models: dict[str, torch.nn.Module] = {}
    for v, sd in sds.items():
        models[v] = load_f64_from_state(spec, hf_dir, sd)
    patched = last_logits(models[hf_variant], probe)
    patch_delta = float((patched - unpatched).abs().max())
    log(f"  float64 patch delta vs stock transformers (float32 norm/softmax/rope): {patch_delta:.3e}")
    assert patch_delta < 1e-3

    # prompts: for each length pick the first passage whose greedy run is decisive in every variant
    tok = AutoTokenizer.from_pretrained(hf_dir)
    passages = tokenize_passages(tok)
    prompts_by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in sds}
    chosen: list[dict[str, Any]] = []
    for L in PROMPT_LENGTHS:
        ok = False
        cands = [(pi, off) for off in PROMPT_OFFSETS for pi in range(len(passages))
                 if off + L - 1 <= len(passages[pi])]
        for pi, off in cands:
            ids = [BOS_ID] + passages[pi][off: off + L - 1]
            res = {}
            worst = math.inf
            for v, m in models.items():
                res[v] = run_prompt(m, ids)
                worst = min(worst, res[v]["minRelMargin"])
                if worst < REL_MARGIN:
                    break
            if worst >= REL_MARGIN:
                for v in sds:
                    prompts_by_variant[v].append(res[v])
                chosen.append({"length": L, "passage": pi, "offset": off, "text": tok.decode(ids[1:]),
                               "worstRelMargin": worst})
                log(f"  prompt len {L}: passage {pi} offset {off}, worst rel margin {worst:.4f}, "
                    f"distinct greedy tokens {len(set(res[hf_variant]['greedy']))}")
                ok = True
                break
            log(f"  prompt len {L}: passage {pi} offset {off} rejected (rel margin {worst:.2e})")
        assert ok, f"no decisive prompt of length {L} for {name}"

    # float32 (stock transformers, KV cache) against each variant's float64 reference
    f32: dict[str, Any] = {}
    for v, sd in sds.items():
        m32 = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager").eval()
        sd32 = {k: t.to(torch.float32) for k, t in sd.items()}
        missing, unexpected = m32.load_state_dict(sd32, strict=False)
        assert not unexpected and all(k == "lm_head.weight" for k in missing)
        f32[v] = [float32_check(m32, p, p["_logits64"]) for p in prompts_by_variant[v]]
        log(f"  float32+KV-cache vs float64 [{v}]: max |dlogit| "
            f"{max(c['maxAbsDiff'] for c in f32[v]):.2e}, greedy match {[c['greedyMatches'] for c in f32[v]]}")

    # quantization / conversion error vs the original (HF) weights
    diffs = {v: diff_vs(prompts_by_variant[hf_variant], prompts_by_variant[v]) for v in sds if v != hf_variant}

    for v, plist in prompts_by_variant.items():
        for p in plist:
            p.pop("_logits64", None)
        variants[v]["prompts"] = plist

    cfg = spec["config"]
    ref: dict[str, Any] = {
        "model": name,
        "generator": "tools/reference/make_fixtures.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": _pkg_version("gguf"), "safetensors": safetensors.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "architecture": type(model).__name__,
        "config": {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                   "num_attention_heads": cfg.num_attention_heads,
                   "num_key_value_heads": cfg.num_key_value_heads,
                   "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
                   "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
                   "rope_parameters": dict(cfg.rope_parameters), "rms_norm_eps": cfg.rms_norm_eps,
                   "tie_word_embeddings": cfg.tie_word_embeddings},
        "baseline": hf_variant,
        "greedySteps": GREEDY_STEPS,
        "relMarginThreshold": REL_MARGIN,
        "promptSource": chosen,
        "variants": variants,
        "diffVsBaseline": diffs,
        "float32Check": f32,
        "ggufLayout": gguf_layout,
        "notes": [
            "Every variant's reference is transformers in float64 (RMSNorm, softmax and RoPE patched to "
            "float64 too) on exactly the weights that variant stores (BF16/F16 upcast; GGUF F16/Q8_0 "
            "dequantized with gguf.quants.dequantize and the llama Q/K row permutation undone).",
            "logits: last prompt position, all vocab entries, 6 significant digits; top50: [id, value] "
            "at full float64 precision, sorted by value desc then id.",
            "greedy: 32 argmax tokens, full recompute each step, no EOS stop. margins[i] = top1 - top2 at "
            "step i (6 s.d.); minMargin = min(margins) (full precision); minRelMargin = min over steps "
            "of margin / (max - min logit).",
            "diffVsBaseline: max |logit(variant) - logit(baseline)| at the last prompt position, per "
            "prompt, both float64 references; greedyPrefixAgree = number of leading greedy tokens equal.",
            "float32Check: stock transformers in float32 with a KV cache (prefill, then one token per "
            "step) on the variant's weights vs that variant's float64 reference: max |dlogit| at the last "
            "prompt position and whether all 32 greedy tokens match.  Informative only.",
        ],
    }
    if spec["chat_template"] is not None:
        rendered = tok.apply_chat_template(CHAT_MESSAGES_2, tokenize=False, add_generation_prompt=True)
        ref["chatTemplate"] = {
            "template": spec["chat_template"],
            "messages": CHAT_MESSAGES_2,
            "addGenerationPrompt": True,
            "rendered": rendered,
            "renderedIds": tok(rendered, add_special_tokens=False)["input_ids"],
        }
    dump_json(mdir / "reference.json", ref)
    return ref


def _pkg_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover
        return "?"


# --------------------------------------------------------------------------------------
# tokenizer fixtures


def tokenizer_fixture(tok_file: Path, out: Path, label: str, template_dir: Path | None) -> None:
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), clean_up_tokenization_spaces=False)
    raw = tokenizers.Tokenizer.from_file(str(tok_file))
    cases = []
    for text in TOKENIZER_CORPUS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids_sp = tok(text, add_special_tokens=True)["input_ids"]
        dec = tok.decode(ids, clean_up_tokenization_spaces=False)
        dec_skip = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        # cross-check against the tokenizers library itself
        assert raw.encode(text, add_special_tokens=False).ids == ids, text
        assert raw.decode(ids, skip_special_tokens=False) == dec, text
        assert raw.decode(ids, skip_special_tokens=True) == dec_skip, text
        cases.append({
            "text": text,
            "ids": ids,
            "idsWithSpecial": ids_sp,
            "tokens": tok.convert_ids_to_tokens(ids),
            "decoded": dec,
            "decodedSkipSpecial": dec_skip,
        })
    doc: dict[str, Any] = {
        "tokenizer": label,
        "generator": "tools/reference/make_fixtures.py",
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "notes": [
            "ids = tokenizer(text, add_special_tokens=False); idsWithSpecial = add_special_tokens=True "
            "(the post-processor; neither tokenizer adds BOS/EOS this way, so both lists are equal).",
            "decoded = decode(ids); decodedSkipSpecial = decode(ids, skip_special_tokens=True); both with "
            "clean_up_tokenization_spaces=False, and both equal to the tokenizers library's decode.",
        ],
        "cases": cases,
    }
    if template_dir is not None and (template_dir / "tokenizer_config.json").is_file():
        ttok = AutoTokenizer.from_pretrained(template_dir)
        if getattr(ttok, "chat_template", None):
            rendered = ttok.apply_chat_template(CHAT_MESSAGES_3, tokenize=False, add_generation_prompt=True)
            doc["chatTemplate"] = {"template": ttok.chat_template, "messages": CHAT_MESSAGES_3,
                                   "addGenerationPrompt": True, "rendered": rendered}
    elif template_dir is not None:
        doc["chatTemplate"] = None
        doc["notes"].append(f"No tokenizer_config.json next to {label}'s tokenizer.json in the shared assets, "
                            "so no chat template fixture.")
    dump_json(out, doc)


# --------------------------------------------------------------------------------------


def size_summary(root: Path) -> None:
    log("\n== fixture sizes")
    total = 0
    groups: dict[str, int] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            n = p.stat().st_size
            total += n
            key = "/".join(p.relative_to(root).parts[:2])
            groups[key] = groups.get(key, 0) + n
            log(f"  {n:>11,d}  {rel(p)}")
    log("  --")
    for k, n in groups.items():
        log(f"  {n:>11,d}  {k}/")
    log(f"  {total:>11,d}  TOTAL ({total / 1e6:.2f} MB)")


def main() -> None:
    global SMOLLM_LAYERS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", help="shared assets folder (default: <repo>/shared/assets or ../shared/assets)")
    ap.add_argument("--only", nargs="*", help="only these models (and skip the tokenizer fixtures)")
    ap.add_argument("--out", default=str(FIXTURES), help="output root (default test/fixtures)")
    ap.add_argument("--smollm-layers", type=int, default=2,
                    help="layers of the smollm2-2l fixture (default 2; 1 roughly halves its size)")
    args = ap.parse_args()
    SMOLLM_LAYERS = args.smollm_layers

    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    assets = find_assets(args.assets)
    out_root = Path(args.out).resolve()

    for spec in model_specs(assets):
        if args.only and spec["name"] not in args.only:
            continue
        process_model(spec, assets, out_root)

    if not args.only:
        smol = assets / "tokenizers" / "SmolLM2-135M-Instruct"
        tokenizer_fixture(smol / "tokenizer.json", out_root / "tokenizer" / "smollm2-corpus.json",
                          "SmolLM2-135M-Instruct", smol)
        rt = assets / "models" / "cokv-retrieval-tiny"
        tokenizer_fixture(rt / "tokenizer.json", out_root / "tokenizer" / "retrieval-tiny-corpus.json",
                          "cokv-retrieval-tiny", None)

    size_summary(out_root)


if __name__ == "__main__":
    sys.exit(main())
