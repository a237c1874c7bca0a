"""CoKVTablePress inside kvpress's own code: the per-(layer, KV head) kept counts equal the exported budgets.

Run from the repository root with the venv described in tools/kvpress/README.md:
    /tmp/kvpress-venv/bin/python -m pytest tools/kvpress/test_press.py -q
The table is exported by the cokv CLI (`cokv profile export`, from source through tsx; COKV_CLI overrides the
command) from the committed loglik profile of cokv-retrieval-tiny, and the model is that HF folder.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cokv_kvpress import CoKVTablePress, expand_to_model_layers, load_table  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO.parent / "shared" / "assets" / "models" / "cokv-retrieval-tiny"
PROFILE = REPO / "results" / "profiles" / "cokv-retrieval-tiny__loglik.json"
LENGTH = 96  # the prompt length of the test = the export's --length, so budgets are exact integers
WINDOW = 8
RATIOS = [0.01, 0.1, 0.25, 0.5, 0.62, 0.75, 0.9, 0.95, 0.99]

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason=f"{MODEL} is absent")


def cokv(*args: str) -> subprocess.CompletedProcess:
    cmd = shlex.split(os.environ.get("COKV_CLI", "node --import tsx src/cli/run.ts"))
    return subprocess.run([*cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def export(tmp: Path, fmt: str, out: str, *extra: str) -> Path:
    path = tmp / out
    r = cokv("profile", "export", str(PROFILE), "--model", str(MODEL), "--format", fmt, "--out", str(path), *extra)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cokv-export")
    npy = export(tmp, "kvpress", "table.npy", "--length", str(LENGTH), "--window", str(WINDOW))
    csv = export(tmp, "csv", "values.csv")
    return tmp, npy, csv


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # The asset's config.json is transformers 5.x style (rope_parameters); 4.57 ignores that key and would use
    # θ = 10000, so a 4.x config is written beside links to the same files.
    folder = tmp_path_factory.mktemp("retrieval-tiny-4x")
    config = json.loads((MODEL / "config.json").read_text())
    rope = config.pop("rope_parameters", None)
    if rope is not None:
        config["rope_theta"] = rope["rope_theta"]
    (folder / "config.json").write_text(json.dumps(config))
    for f in MODEL.iterdir():
        if f.name != "config.json" and f.is_file():
            (folder / f.name).symlink_to(f)
    torch.set_num_threads(1)
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    assert m.config.rope_theta == 100000.0
    return m.eval()


def kept_counts(model, press, ids) -> np.ndarray:
    """Prefill `ids` under `press`; the kept entries per (layer, KV head) = seq_len − kvpress's masked keys."""
    with torch.no_grad(), press(model):
        model(ids, past_key_values=DynamicCache())
    kv_heads = model.config.num_key_value_heads
    out = np.full((model.config.num_hidden_layers, kv_heads), ids.shape[1], dtype=np.int64)
    for layer, block in enumerate(model.model.layers):
        masked = block.self_attn.masked_key_indices
        if masked is None:
            continue
        _, heads, positions = masked
        out[layer] -= np.bincount(heads.numpy(), minlength=kv_heads)
        # The observation window (the last WINDOW tokens) is never masked in a head that keeps ≥ WINDOW entries.
        for h in range(kv_heads):
            if out[layer, h] >= WINDOW:
                in_window = positions[heads == h] >= ids.shape[1] - WINDOW
                assert not bool(in_window.any()), f"layer {layer} head {h}: a window token was masked"
    return out


def test_table_shape_and_rows(tables, model):
    _, npy, _ = tables
    table = load_table(str(npy))
    n_layers, kv_heads = model.config.num_hidden_layers, model.config.num_key_value_heads
    assert table.shape == (99, n_layers, kv_heads)
    counts = np.rint((1 - table.astype(np.float64)) * LENGTH).astype(np.int64)
    np.testing.assert_allclose((1 - table) * LENGTH, counts, atol=1e-3)  # integer budgets, divided by the length
    n = n_layers * kv_heads
    for r in range(99):
        # T = round(n · keep · length), keep = (99 − r)%, half to even: the table's total per row (at least one
        # token per head, kvpress's floor)
        assert counts[r].sum() == max(n, int(np.round(n * (99 - r) * LENGTH / 100))), r
        assert counts[r].min() >= 1, r


def test_budgets_follow_values(tables):
    # Within a row, where no head is capped at the length, a head with a larger CoKV value keeps at least as many.
    _, npy, csv = tables
    table = load_table(str(npy))
    rows = np.genfromtxt(csv, delimiter=",", names=True)
    values = np.zeros(table.shape[1:])
    values[rows["layer"].astype(int), rows["kv_head"].astype(int)] = rows["value"]
    counts = np.rint((1 - table.astype(np.float64)) * LENGTH)
    order = np.argsort(-values, axis=None, kind="stable")
    for r in (49, 74, 89):
        c = counts[r].reshape(-1)[order]
        assert np.all(np.diff(c) <= 1), r  # non-increasing up to largest-remainder rounding
        assert c[0] > c[-1], r


@pytest.mark.parametrize("ratio", RATIOS)
def test_kept_counts_equal_the_table(tables, model, ratio):
    _, npy, _ = tables
    table = load_table(str(npy))
    press = CoKVTablePress(table_path=str(npy), compression_ratio=ratio)
    ids = torch.randint(4, model.config.vocab_size, (1, LENGTH), generator=torch.Generator().manual_seed(7))
    got = kept_counts(model, press, ids)
    want = np.rint((1 - table[round(ratio * 100) - 1].astype(np.float64)) * LENGTH).astype(np.int64)
    np.testing.assert_array_equal(got, want)
    assert got.sum() == max(got.size, int(np.round(got.size * (100 - round(ratio * 100)) * LENGTH / 100)))


def test_wrong_shape_is_refused(tables, model):
    tmp, _, _ = tables
    bad = tmp / "bad.npy"
    np.save(bad, np.zeros((99, 3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(99, 3, 4\), the model needs \(99, 4, 4\)"):
        with CoKVTablePress(table_path=str(bad), compression_ratio=0.5)(model):
            pass
    np.save(bad, np.zeros((99, 4, 4), dtype=np.float64))
    with pytest.raises(ValueError, match="float32"):
        load_table(str(bad))


def test_sliding_layers_prune_nothing():
    class Config:
        num_hidden_layers = 4
        num_key_value_heads = 2
        num_attention_heads = 4
        layer_types = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]

    table = np.full((99, 2, 2), 0.5, dtype=np.float32)
    out = expand_to_model_layers(table, Config())
    assert out.shape == (99, 4, 2)
    assert np.all(out[:, [0, 2]] == 0) and np.all(out[:, [1, 3]] == 0.5)
    with pytest.raises(ValueError, match="2 sliding-window layers are not budgeted"):
        expand_to_model_layers(np.zeros((99, 4, 2), dtype=np.float32), Config())
