"""Kept-token sets of NVIDIA kvpress's own presses on the peer-check prompts (issue #19 item 5).

Writes test/fixtures/kvpress/keptsets.json, which test/press-kvpress.test.ts checks cokv's `--preset kvpress`
against, per (layer, KV head). Run with a Python that has torch, transformers 4.56+ and tokenizers, and kvpress's
source on PYTHONPATH (kvpress is not installed; its pyproject pins need a venv, see
../shared/docs/findings/peer-kvpress.md §1):

    PYTHONPATH=/tmp/kvpress /tmp/kvpress-venv/bin/python tools/reference/kvpress_keptsets.py \
        --model ../shared/assets/models/cokv-retrieval-tiny --data ../shared/assets/data/retrieval-dev.jsonl \
        --out test/fixtures/kvpress/keptsets.json

Prompts: the first passkey@1024, multikey@1024 and kv@512 items, ids = [BOS] + encode(context + "\n" + input),
as `cokv eval` builds them (the fixture keeps their sha256 so the test checks cokv builds the same ids). Protocol:
the whole prompt is compressed in one prefill, in float32 with SDPA attention. Kept sets: for the presses that
evict (SnapKV, PyramidKV, StreamingLLM), each row of the compressed cache is matched bit for bit to a row of the
uncompressed prefill's keys (compression only gathers rows, and prefill attention is full either way, so the keys
are the same); AdaKVPress masks instead of evicting, so its kept set is the complement of `masked_key_indices`.
A set is stored as a little-endian bitmap over the prompt's positions (bit p of byte p >> 3), base64; the ids hash is sha256 of the JSON list without spaces ("[0,12,…]").
"""

import argparse
import base64
import hashlib
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from kvpress import AdaKVPress, PyramidKVPress, SnapKVPress, StreamingLLMPress

PROMPTS = [("passkey", 1024), ("multikey", 1024), ("kv", 512)]
RATIOS = [0.25, 0.5, 0.75, 0.9]
WINDOW = 64  # SnapKVPress / PyramidKVPress default window_size; cokv refuses budgets not above the window


def presses(ratio):
    """(name, kvpress press, cokv press options) for one compression ratio."""
    return [
        ("snapkv", SnapKVPress(compression_ratio=ratio), {"press": "snapkv"}),
        ("adakv", AdaKVPress(SnapKVPress(compression_ratio=ratio), alpha_safeguard=0.2), {"press": "adakv"}),
        ("adakv-a0.5", AdaKVPress(SnapKVPress(compression_ratio=ratio), alpha_safeguard=0.5), {"press": "adakv", "adaFloor": 0.5}),
        ("pyramidkv", PyramidKVPress(compression_ratio=ratio), {"press": "pyramidkv"}),
        ("pyramidkv-b2", PyramidKVPress(compression_ratio=ratio, beta=2), {"press": "pyramidkv", "pyramidBeta": 2}),
        ("streaming", StreamingLLMPress(compression_ratio=ratio, n_sink=4), {"press": "streaming"}),
    ]


def layer_keys(cache, layer):
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys
    return cache.key_cache[layer]


def bitmap(positions, length):
    bits = bytearray((length + 7) // 8)
    for p in positions:
        bits[p >> 3] |= 1 << (p & 7)
    return base64.b64encode(bytes(bits)).decode("ascii")


def load_model(path):
    config = AutoConfig.from_pretrained(path)
    # transformers 4.x reads top-level rope_theta; the folder's config.json (written by 5.x) keeps it under
    # rope_parameters, which 4.x would ignore and silently use θ = 10000.
    with open(os.path.join(path, "config.json")) as f:
        raw = json.load(f)
    theta = raw.get("rope_theta", raw.get("rope_parameters", {}).get("rope_theta"))
    assert theta is not None, "no rope_theta in config.json"
    config.rope_theta = float(theta)
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    # inv_freq[i] = θ^(−2i/d): the θ the model really uses, from inv_freq[1].
    theta_used = float(model.model.rotary_emb.inv_freq[1].double().item() ** (-config.head_dim / 2.0))
    assert abs(theta_used - config.rope_theta) / config.rope_theta < 1e-4, (theta_used, config.rope_theta)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(a.model)
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    bos = model.config.bos_token_id
    rows = [json.loads(line) for line in open(a.data) if line.strip()]
    prompts = []
    for task, length in PROMPTS:
        index = next(i for i, r in enumerate(rows) if r["task"] == task and r["length"] == length)
        r = rows[index]
        ids = [bos] + tok.encode(r["context"] + "\n" + r["input"], add_special_tokens=False).ids
        prompts.append({"name": f"{task}@{length}", "index": index, "length": len(ids), "ids": ids})

    cases = []
    for p in prompts:
        ids = torch.tensor([p["ids"]])
        L = p["length"]
        with torch.no_grad():
            full = DynamicCache()
            model(ids, past_key_values=full, use_cache=True)
        num_layers = model.config.num_hidden_layers
        kv_heads = model.config.num_key_value_heads
        lookup = []
        for layer in range(num_layers):
            k = layer_keys(full, layer)[0]
            per_head = []
            for h in range(kv_heads):
                rows_h = {k[h, t].numpy().tobytes(): t for t in range(L)}
                assert len(rows_h) == L, "repeated key rows: positions cannot be matched"
                per_head.append(rows_h)
            lookup.append(per_head)
        for ratio in RATIOS:
            n_kept = int(L * (1 - ratio))
            if n_kept <= WINDOW:
                print(f"{p['name']} r={ratio}: n_kept {n_kept} ≤ window {WINDOW}, skipped", file=sys.stderr)
                continue
            for name, press, cokv in presses(ratio):
                cache = DynamicCache()
                with torch.no_grad(), press(model):
                    model(ids, past_key_values=cache, use_cache=True)
                kept = []
                for layer in range(num_layers):
                    attn = model.model.layers[layer].self_attn
                    if isinstance(press, AdaKVPress):
                        _, heads, seqs = attn.masked_key_indices
                        masked = [set() for _ in range(kv_heads)]
                        for h, s in zip(heads.tolist(), seqs.tolist()):
                            masked[h].add(s)
                        kept.append([sorted(set(range(L)) - masked[h]) for h in range(kv_heads)])
                        del attn.masked_key_indices
                    else:
                        k = layer_keys(cache, layer)[0]
                        row = []
                        for h in range(kv_heads):
                            pos = sorted(lookup[layer][h][k[h, t].numpy().tobytes()] for t in range(k.shape[1]))
                            assert len(set(pos)) == len(pos)
                            row.append(pos)
                        kept.append(row)
                cases.append({
                    "prompt": p["name"], "name": name, "ratio": ratio, "kvpress": repr(press),
                    "cokv": {**cokv, "preset": "kvpress", "ratio": ratio},
                    "counts": [[len(s) for s in row] for row in kept],
                    "kept": [[bitmap(s, L) for s in row] for row in kept],
                })
                print(f"{p['name']} r={ratio} {name}: counts {cases[-1]['counts']}", file=sys.stderr)

    out = {
        "about": "kvpress's own kept sets (per layer, KV head) on the peer-check prompts; made by tools/reference/kvpress_keptsets.py",
        "kvpress": "github:NVIDIA/kvpress 8bb29b9c (v0.5.4), from source",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model": os.path.basename(os.path.normpath(a.model)),
        "protocol": "whole prompt compressed in one prefill, float32, sdpa",
        "prompts": [{"name": p["name"], "index": p["index"], "length": p["length"],
                     "idsSha256": hashlib.sha256(json.dumps(p["ids"], separators=(",", ":")).encode()).hexdigest()} for p in prompts],
        "cases": cases,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
