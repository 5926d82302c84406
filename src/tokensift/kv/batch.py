"""Continuous batching over ragged caches: independent sequences decoded together, joining and leaving.

A :class:`BatchLayer` holds one layer's cache for several unrelated sequences (requests of a server),
each (row, KV head) with its own length: a compressed context keeps a different number of tokens per
head, and requests joined at different times have different lengths. Storage is padded to the longest
row with a validity mask, so a decoding step is one SDPA call for the whole batch; a new token is
written at each (row, head)'s own end. Tokens are not kept in position order (rotary positions are
already inside the keys, and attention is order-free), which is what lets ragged heads share one tensor.

A row joins with :meth:`BatchLayer.add_row` (its own cache, from :func:`row_segments`) and leaves with
:meth:`BatchLayer.remove_rows` (the last row moves into its place), both between decoding steps; neither
copies the other rows. Sliding-window layers (Gemma-3's local
layers) mask keys that left the window, by the absolute position stored per slot.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import CacheLayerMixin

from tokensift.errors import InputError, ModelError
from tokensift.kv.cache import _ATTACHED, RaggedLayer, tensor_bytes
from tokensift.kv.model import layer_windows, text_config

GROW = 64
"""Slots added at a time when a row reaches the end of the padded storage."""


def row_segments(layer: Any, length: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per KV head ``[L, D]`` keys and values of a one-row cache layer (ragged or an ordinary one) whose
    sequence has consumed ``length`` positions."""
    if isinstance(layer, RaggedLayer):
        heads = int(layer.keys.shape[1])
        pairs = [layer.segment(0, h) for h in range(heads)]
        return [k for k, _ in pairs], [v for _, v in pairs]
    keys, values = layer.keys, layer.values
    if keys is None or keys.shape[0] != 1:
        raise InputError("a cache joins a batch one row at a time")
    return list(keys[0]), list(values[0])


class BatchLayer(CacheLayerMixin):
    """One layer's cache for a batch of independent sequences: padded ``[rows, Hkv, C, D]`` storage, a
    validity mask, each (row, head)'s length, and (sliding layers) each slot's absolute position.

    Storage is allocated with room to spare (rows and slots grow geometrically), so a row joins by writing
    its own tensors and leaves by moving the last row into its place: no step copies the whole batch
    except an occasional growth. ``keys``/``values`` are views of the active rows.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False
    keys: Tensor
    values: Tensor

    def __init__(
        self,
        heads: int,
        dim: int,
        value_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        window: int | None = None,
        rows: int = 1,
    ) -> None:
        super().__init__()
        self.dtype, self.device, self.window = dtype, device, window
        self.reserve = rows
        """Rows to make room for when the first row joins (the batch size expected)."""
        self.is_initialized = True
        self.n = 0
        """Active rows (the first ``n`` of the storage)."""
        self._keys = torch.zeros(0, heads, 0, dim, dtype=dtype, device=device)
        self._values = torch.zeros(0, heads, 0, value_dim, dtype=dtype, device=device)
        self._valid = torch.zeros(0, heads, 0, dtype=torch.bool, device=device)
        self._positions = torch.zeros(0, heads, 0, dtype=torch.long, device=device)
        self._ends = torch.zeros(0, heads, dtype=torch.long, device=device)
        self._next = torch.zeros(0, dtype=torch.long, device=device)
        self._views()

    def _views(self) -> None:
        n = self.n
        self.keys, self.values = self._keys[:n], self._values[:n]
        self.valid, self.positions = self._valid[:n], self._positions[:n]
        self.ends, self.next_position = self._ends[:n], self._next[:n]
        """``[B, Hkv]`` slots used per (row, head); ``[B]`` the position each row's next token takes."""

    @property
    def rows(self) -> int:
        return self.n

    @property
    def capacity(self) -> int:
        return int(self._keys.shape[2])

    def _grow(self, rows: int, slots: int) -> None:
        """Room for at least ``rows`` rows of ``slots`` slots (grown by half again, to amortise the copies)."""
        have_rows, have_slots = int(self._keys.shape[0]), self.capacity
        if rows <= have_rows and slots <= have_slots:
            return
        rows = have_rows if rows <= have_rows else max(rows, have_rows + have_rows // 2)
        slots = have_slots if slots <= have_slots else max(slots, have_slots + have_slots // 2)
        extra_rows, extra_slots = rows - have_rows, slots - have_slots
        pad = torch.nn.functional.pad
        self._keys = pad(self._keys, (0, 0, 0, extra_slots, 0, 0, 0, extra_rows))
        self._values = pad(self._values, (0, 0, 0, extra_slots, 0, 0, 0, extra_rows))
        self._valid = pad(self._valid, (0, extra_slots, 0, 0, 0, extra_rows))
        self._positions = pad(self._positions, (0, extra_slots, 0, 0, 0, extra_rows))
        self._ends = pad(self._ends, (0, 0, 0, extra_rows))
        self._next = pad(self._next, (0, extra_rows))
        self._views()

    def add_row(self, keys: list[Tensor], values: list[Tensor], length: int) -> None:
        """Append a sequence: per KV head ``[L_h, D]`` keys and values, ``length`` positions consumed so far
        (the last ``L_h`` positions for a sliding layer)."""
        if len(keys) != self._keys.shape[1] or len(values) != len(keys):
            raise InputError(f"a row needs {self._keys.shape[1]} KV heads, got {len(keys)}")
        longest = max(int(k.shape[0]) for k in keys)
        self._grow(max(self.n + 1, self.reserve), longest + GROW)
        row = self.n
        self._valid[row] = False
        for h, (k, v) in enumerate(zip(keys, values, strict=True)):
            n = int(k.shape[0])
            self._keys[row, h, :n], self._values[row, h, :n], self._valid[row, h, :n] = k, v, True
            self._positions[row, h, :n] = torch.arange(length - n, length, device=self.device)
            self._ends[row, h] = n
        self._next[row] = length
        self.n += 1
        self._views()

    def remove_rows(self, rows: list[int]) -> list[int]:
        """Drop ``rows``: each is replaced by the current last row. Returns, for every row left, the index it
        had before (the caller reorders its own per-row state the same way)."""
        order = list(range(self.n))
        for row in sorted(set(rows), reverse=True):
            last = self.n - 1
            if row != last:
                self._move(last, row)
                order[row] = order[last]
            order.pop()
            self.n -= 1
        if self.n == 0:  # an empty batch gives its memory back
            self._grow_to_nothing()
        self._views()
        return order

    def _move(self, source: int, target: int) -> None:
        used = int(self._ends[source].max())
        self._keys[target, :, :used] = self._keys[source, :, :used]
        self._values[target, :, :used] = self._values[source, :, :used]
        self._valid[target] = self._valid[source]
        self._positions[target, :, :used] = self._positions[source, :, :used]
        self._ends[target], self._next[target] = self._ends[source], self._next[source]

    def _grow_to_nothing(self) -> None:
        heads = int(self._keys.shape[1])
        self._keys = self._keys.new_zeros(0, heads, 0, self._keys.shape[3])
        self._values = self._values.new_zeros(0, heads, 0, self._values.shape[3])
        self._valid, self._positions = self._valid.new_zeros(0, heads, 0), self._positions.new_zeros(0, heads, 0)
        self._ends, self._next = self._ends.new_zeros(0, heads), self._next.new_zeros(0)

    # --- what transformers asks of a layer ------------------------------------------------------------------
    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        return None

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        """Write each row's one new token at the end of each of its heads."""
        if not _ATTACHED[0]:
            raise ModelError("a batch cache can only be decoded inside tokensift.kv.attach.attached(...)")
        if key_states.shape[2] != 1 or key_states.shape[0] != self.rows:
            raise InputError(
                f"a batch cache decodes one token per row ({self.rows} rows), got {tuple(key_states.shape[:3])}"
            )
        if int(self.ends.max()) >= self.capacity:
            self._grow(self.n, self.capacity + GROW)
        slot = self.ends[:, :, None]
        self.keys.scatter_(2, slot[..., None].expand(-1, -1, 1, self.keys.shape[3]), key_states)
        self.values.scatter_(2, slot[..., None].expand(-1, -1, 1, self.values.shape[3]), value_states)
        self.valid.scatter_(2, slot, True)
        self.positions.scatter_(2, slot, self.next_position[:, None, None].expand(-1, self.keys.shape[1], 1))
        self.ends += 1
        self.next_position += 1
        return key_states, value_states

    def get_mask_sizes(self, query_length: int | Tensor) -> tuple[int, int]:
        q = query_length if isinstance(query_length, int) else int(query_length.shape[0])
        return self.capacity + q, 0

    def get_seq_length(self) -> int:
        return int(self.ends.max()) if self.rows else 0

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:
        return -1

    def reset(self) -> None:
        self.remove_rows(list(range(self.n)))

    # --- ours -----------------------------------------------------------------------------------------------
    def lengths(self) -> Tensor:
        return self.ends.clone()

    def nbytes(self) -> int:
        """Bytes of the padded working storage (keys + values, spare room included)."""
        return tensor_bytes(self._keys) + tensor_bytes(self._values)

    def attend(self, query: Tensor, scaling: float, *, need_weights: bool = False) -> tuple[Tensor, None]:
        """Attention of each row's one query ``[B, H, 1, D]`` over its own valid slots; ``[B, 1, H, Dv]``."""
        used = int(self.ends.max())  # slots past every row's end hold nothing
        allowed = self.valid[:, :, :used]
        if self.window is not None:
            newest = (self.next_position - 1)[:, None, None]
            allowed = allowed & (self.positions[:, :, :used] > newest - self.window)
        batch, heads, _, dim = query.shape
        kv_heads = self.keys.shape[1]
        # the query heads that share a KV head become that head's query rows: keys and values are read once
        # (no GQA expansion), and each row's mask covers all of them
        grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
        out = torch.nn.functional.scaled_dot_product_attention(
            grouped, self.keys[:, :, :used], self.values[:, :, :used], attn_mask=allowed[:, :, None, :], scale=scaling
        )
        out = out.reshape(batch, heads, 1, out.shape[-1])
        return out.transpose(1, 2).contiguous(), None


class Batch:
    """Independent sequences decoded together: each joins with its own one-row cache, leaves when done.

    ``rows`` is the batch size to make room for at once (more rows still fit). ``step`` feeds one token
    per row at the row's own next position and returns the logits ``[B, V]``; a row joins at the end, and
    :meth:`leave` says where the remaining rows went.
    """

    def __init__(self, model: torch.nn.Module, rows: int = 1) -> None:
        from transformers import DynamicCache

        self.model, self.reserve = model, rows
        config = text_config(model)
        self.cache: Any = DynamicCache(config=config)
        self.windows = layer_windows(model)
        self.cache.layers = []

    @property
    def rows(self) -> int:
        return self.cache.layers[0].rows if self.cache.layers else 0

    def join(self, cache: Any, length: int) -> int:
        """Add a one-row cache of a sequence that has consumed ``length`` positions; returns its row."""
        if not self.cache.layers:
            for layer, window in zip(cache.layers, self.windows, strict=True):
                keys, values = row_segments(layer, length)
                first = keys[0]
                self.cache.layers.append(
                    BatchLayer(
                        len(keys), first.shape[-1], values[0].shape[-1], first.dtype, first.device, window, self.reserve
                    )
                )
        for mine, layer in zip(self.cache.layers, cache.layers, strict=True):
            keys, values = row_segments(layer, length)
            mine.add_row(keys, values, length)
        return self.rows - 1

    def leave(self, rows: list[int]) -> list[int]:
        """Drop ``rows``; each is replaced by the last row. Returns the old index of every row left, in its new
        order (reorder per-row state the same way: ``state = [state[i] for i in order]``)."""
        order = list(range(self.rows))
        for layer in self.cache.layers:
            order = layer.remove_rows(rows)
        return order

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.cache.layers)

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        """Logits ``[B, V]`` after feeding ``tokens [B]`` (call inside ``attached(model, None)``)."""
        if tokens.shape[0] != self.rows or not self.rows:
            raise InputError(f"one token per row: {self.rows} rows, got {tokens.shape[0]} tokens")
        positions = self.cache.layers[0].next_position[:, None].clone()
        output = self.model(tokens[:, None], past_key_values=self.cache, position_ids=positions, use_cache=True)
        return output.logits[:, -1]
