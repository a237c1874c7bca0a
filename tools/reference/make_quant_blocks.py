#!/usr/bin/env python3
"""Write the block-quantization fixtures under test/fixtures/quant/: raw blocks made by llama.cpp's own quantizer
(llama-quantize) for every block-quantized type cokv reads, with gguf-py's dequantization of them.

    PYTHONPATH=/tmp/llama.cpp/gguf-py /tmp/venv/bin/python tools/reference/make_quant_blocks.py \
        [--quantize /tmp/llama.cpp/build/bin/llama-quantize] [--out test/fixtures/quant]

Steps: write a tiny F32 llama-architecture GGUF with gguf-py (random, deliberately uneven values), run
`llama-quantize --pure` once per type, read each result back with gguf-py, and save some rows of two tensors:
blk.0.ffn_up.weight (512 columns: two 256-element super-blocks per row, so every type) and, for the 32-element
types, blk.0.ffn_down.weight (800 columns, not a multiple of 256; the K-quants fall back to another type there).
For each saved tensor: `<type>-k<cols>.q` (the raw rows as llama-quantize wrote them), `<type>-k<cols>.f32`
(`gguf.quants.dequantize` of those bytes, little-endian float32) and an entry in manifest.json. The TypeScript
tests only read these files.

Deterministic: fixed numpy seed, and llama-quantize's reference quantizers are deterministic for a given build, so
a rerun with the same llama.cpp commit gives identical files (the commit is recorded in the manifest).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import gguf
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parents[2]

# cokv name -> (llama-quantize preset name, ggml type). --pure makes every 2-D tensor this type where it fits.
TYPES = {
    "q8_0": ("Q8_0", gguf.GGMLQuantizationType.Q8_0),
    "q4_0": ("Q4_0", gguf.GGMLQuantizationType.Q4_0),
    "q4_k": ("Q4_K_M", gguf.GGMLQuantizationType.Q4_K),
    "q6_k": ("Q6_K", gguf.GGMLQuantizationType.Q6_K),
    "q4_1": ("Q4_1", gguf.GGMLQuantizationType.Q4_1),
    "q5_0": ("Q5_0", gguf.GGMLQuantizationType.Q5_0),
    "q5_1": ("Q5_1", gguf.GGMLQuantizationType.Q5_1),
    "q2_k": ("Q2_K", gguf.GGMLQuantizationType.Q2_K),
    "q3_k": ("Q3_K_M", gguf.GGMLQuantizationType.Q3_K),
    "q5_k": ("Q5_K_M", gguf.GGMLQuantizationType.Q5_K),
    "iq4_nl": ("IQ4_NL", gguf.GGMLQuantizationType.IQ4_NL),
    "iq4_xs": ("IQ4_XS", gguf.GGMLQuantizationType.IQ4_XS),
}

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 512, 800, 8, 4, 32
ROWS_SAVED = 16
# Loose sanity bounds on RMS(dequant - original) / RMS(original): the blocks must really encode the data.
MAX_REL_RMS = {"q2_k": 0.45, "q3_k": 0.25, "q4_0": 0.15, "q4_1": 0.15, "iq4_nl": 0.15, "iq4_xs": 0.15}


def uneven_matrix(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Rows of different scales and offsets, heavy tails, and a few degenerate blocks (zeros, constants)."""
    scale = 10.0 ** rng.uniform(-3, 1, size=(rows, 1))
    offset = rng.choice([0.0, 0.0, 0.5, -1.5], size=(rows, 1)) * scale
    m = (rng.standard_t(4, size=(rows, cols)) * scale + offset).astype(np.float32)
    m[1, 32:64] = 0.0  # an all-zero 32-block (d = 0)
    m[2, :32] = np.float32(0.75) * np.float32(scale[2, 0])  # a constant block
    m[3, 256:] = 0.0  # an all-zero second super-block
    m[4, 7] = np.float32(50.0 * scale[4, 0])  # one outlier per block
    m[4, 300] = np.float32(-50.0 * scale[4, 0])
    m[5, :] = np.abs(m[5, :])  # all positive: exercises the minimums
    return m


def write_source_gguf(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    head_dim = HIDDEN // HEADS
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tensors = {
        "token_embd.weight": uneven_matrix(rng, VOCAB, HIDDEN),
        "blk.0.attn_norm.weight": np.ones(HIDDEN, dtype=np.float32),
        "blk.0.attn_q.weight": uneven_matrix(rng, HIDDEN, HIDDEN),
        "blk.0.attn_k.weight": uneven_matrix(rng, KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_v.weight": uneven_matrix(rng, KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_output.weight": uneven_matrix(rng, HIDDEN, HIDDEN),
        "blk.0.ffn_norm.weight": np.ones(HIDDEN, dtype=np.float32),
        "blk.0.ffn_gate.weight": uneven_matrix(rng, FFN, HIDDEN),
        "blk.0.ffn_up.weight": uneven_matrix(rng, FFN, HIDDEN),
        "blk.0.ffn_down.weight": uneven_matrix(rng, HIDDEN, FFN),
        "output_norm.weight": np.ones(HIDDEN, dtype=np.float32),
        "output.weight": uneven_matrix(rng, VOCAB, HIDDEN),
    }
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def llama_cpp_commit(quantize: Path) -> str:
    try:
        src = quantize.resolve().parents[2]
        return subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, IndexError, FileNotFoundError):
        return "unknown"


def gguf_py_version() -> str:
    """The version in the pyproject.toml beside the gguf module in use (llama.cpp's gguf-py has no __version__)."""
    toml = Path(gguf.__file__).resolve().parents[1] / "pyproject.toml"
    for line in toml.read_text().splitlines() if toml.exists() else []:
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quantize", type=Path, default=Path("/tmp/llama.cpp/build/bin/llama-quantize"))
    ap.add_argument("--out", type=Path, default=ROOT / "test/fixtures/quant")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src-f32.gguf"
        original = write_source_gguf(src, rng)
        for name, (preset, qtype) in TYPES.items():
            dst = Path(tmp) / f"{name}.gguf"
            r = subprocess.run([str(args.quantize), "--pure", str(src), str(dst), preset, "1"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"llama-quantize {preset} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
            reader = gguf.GGUFReader(str(dst))
            by_name = {t.name: t for t in reader.tensors}
            for tname in ("blk.0.ffn_up.weight", "blk.0.ffn_down.weight"):
                t = by_name[tname]
                cols = int(t.shape[0])
                if t.tensor_type != qtype:
                    # Only a K-quant on the 800-column tensor may fall back; anything else is a surprise.
                    if cols % 256 == 0:
                        sys.exit(f"{name}: {tname} came out as {t.tensor_type.name}, expected {qtype.name}")
                    continue
                raw = np.asarray(t.data, dtype=np.uint8)[:ROWS_SAVED]  # (rows, bytes per row)
                values = dequantize(raw, qtype).astype("<f4")
                assert values.shape == (ROWS_SAVED, cols), values.shape
                orig = original[tname][:ROWS_SAVED]
                rel_rms = float(np.sqrt(np.mean((values - orig) ** 2) / np.mean(orig ** 2)))
                bound = MAX_REL_RMS.get(name, 0.1)
                if not rel_rms < bound:
                    sys.exit(f"{name} {tname}: relative RMS error {rel_rms:.3g} ≥ {bound}; blocks look wrong")
                stem = f"{name}-k{cols}"
                (args.out / f"{stem}.q").write_bytes(raw.tobytes())
                (args.out / f"{stem}.f32").write_bytes(values.tobytes())
                entries.append({
                    "dtype": name, "ggmlType": int(qtype), "preset": preset, "tensor": tname,
                    "rows": ROWS_SAVED, "cols": cols, "rowBytes": int(raw.shape[1]),
                    "raw": f"{stem}.q", "values": f"{stem}.f32", "relRmsVsSource": round(rel_rms, 5),
                })
                print(f"{stem}: {raw.shape[1]} bytes/row, rel. RMS vs source {rel_rms:.4f}")
    manifest = {
        "generator": "tools/reference/make_quant_blocks.py",
        "quantizer": f"llama-quantize --pure (llama.cpp {llama_cpp_commit(args.quantize)})",
        "dequantizer": f"gguf.quants.dequantize (gguf-py {gguf_py_version()}), numpy {np.__version__}",
        "entries": entries,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
