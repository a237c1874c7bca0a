"""A kvpress press that applies a CoKV profile's per-(layer, KV head) budgets.

`cokv profile export <profile.json> --model M --format kvpress --out table.npy` writes the table kvpress's own
`LUKVPress` loads: float32 [99, L, KVH], row r = compression ratio (r+1)% (kvpress's fraction removed), entry = that
head's prune ratio (1 − kept/length), kept = the CoKV allocation at keep rate (99 − r)% of a nominal length.

`CoKVTablePress` is `LUKVPress` (kvpress/presses/lukv_press.py) reading that table from a local file instead of
kvpress's built-in URL list, so every budget rule is kvpress's own: each layer keeps
round(Σ_h keep_h · seq_len) tokens, split over its KV heads by largest remainders; each head keeps its top-scored
tokens (sink and window protected) and the others are masked through kvpress's attention patch, as `AdaKVPress`
does. At seq_len = the export's `--length` the kept counts are exactly the exported integer budgets.

The table's L rows are the model's full-attention layers (the CoKV players). For a model whose config lists
sliding-window layers (`layer_types`), those layers get prune ratio 0 (nothing removed), so the table is expanded to
one row per model layer before kvpress indexes it by `layer_idx`; stock `LUKVPress` would refuse such a table.
"""

from dataclasses import dataclass, field

import numpy as np
from transformers import PreTrainedModel

from kvpress import LUKVPress, ScorerPress, SnapKVPress

TABLE_ROWS = 99


def full_attention_layers(config) -> list[int]:
    """Model layers with full attention: all of them unless the config's `layer_types` names sliding ones."""
    config = getattr(config, "text_config", config)
    n = int(config.num_hidden_layers)
    types = getattr(config, "layer_types", None)
    if not types:
        return list(range(n))
    if len(types) != n:
        raise ValueError(f"config.layer_types has {len(types)} entries for {n} layers")
    return [i for i, t in enumerate(types) if t != "sliding_attention"]


def load_table(path: str) -> np.ndarray:
    """Read an exported table: float32, shape [99, L, KVH], entries in [0, 1]; anything else raises ValueError."""
    table = np.load(path, allow_pickle=False)
    if table.dtype != np.float32 or table.ndim != 3 or table.shape[0] != TABLE_ROWS:
        raise ValueError(f"{path}: expected a float32 [99, layers, KV heads] table, got {table.dtype} {table.shape}")
    if not np.all((table >= 0) & (table <= 1)):
        raise ValueError(f"{path}: prune ratios must lie in [0, 1]")
    return table


def expand_to_model_layers(table: np.ndarray, config) -> np.ndarray:
    """[99, L_full, KVH] → [99, num_hidden_layers, KVH], sliding layers pruning nothing; checks the shape."""
    config_t = getattr(config, "text_config", config)
    full = full_attention_layers(config)
    kv_heads = int(getattr(config_t, "num_key_value_heads", None) or config_t.num_attention_heads)
    want = (TABLE_ROWS, len(full), kv_heads)
    if table.shape != want:
        sliding = int(config_t.num_hidden_layers) - len(full)
        note = f" ({sliding} sliding-window layers are not budgeted)" if sliding else ""
        raise ValueError(
            f"CoKV table has shape {table.shape}, the model needs {want}: "
            f"{len(full)} full-attention layers{note} × {kv_heads} KV heads"
        )
    out = np.zeros((TABLE_ROWS, int(config_t.num_hidden_layers), kv_heads), dtype=np.float32)
    out[:, full, :] = table
    return out


@dataclass
class CoKVTablePress(LUKVPress):
    """`LUKVPress` with a CoKV table from `table_path` (see the module docstring).

    Defaults follow cokv's CoKV press as far as kvpress allows: SnapKV scores over an 8-token observation window
    (kvpress has average pooling only; kernel 5 = cokv `--pool avg --kernel 5`), the window always kept, no sink.

    Parameters
    ----------
    table_path : str
        The `.npy` file written by `cokv profile export --format kvpress`.
    press : ScorerPress
        Ranks tokens within each head.
    compression_ratio : float
        Fraction of the prompt's KV pairs removed; selects table row round(100·ratio) − 1.
    sink, window : int
        First and last tokens protected from eviction (kvpress's LUKV semantics).
    """

    press: ScorerPress = field(default_factory=lambda: SnapKVPress(window_size=8, kernel_size=5))
    compression_ratio: float = 0.0
    sink: int = 0
    window: int = 8
    table_path: str = ""

    def __post_init__(self):
        super().__post_init__()
        if not self.table_path:
            raise ValueError("CoKVTablePress needs table_path (made by cokv profile export --format kvpress)")

    def _load_budget_curves(self, model: PreTrainedModel) -> np.ndarray:
        return expand_to_model_layers(load_table(self.table_path), model.config)


__all__ = ["CoKVTablePress", "load_table", "expand_to_model_layers", "full_attention_layers", "TABLE_ROWS"]
