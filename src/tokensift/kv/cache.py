"""A KV-cache layer where every (batch row, KV head) keeps its own number of tokens.

Head-adaptive budgets (AdaKV) and per-row budgets (left-padded batches) give each head a different
length. :class:`RaggedLayer` stores one ``[L, D]`` key and value tensor per (row, head), gathered into
new storage, so the bytes really shrink (no mask over a full-size tensor). When every (row, head) has
the same length it stores one dense ``[B, Hkv, L, D]`` tensor instead and attends with one SDPA call,
so uniform budgets decode as fast as an ordinary cache. It plugs into any transformers
:class:`~transformers.Cache` as one of its ``layers``; attention over it (:meth:`RaggedLayer.attend`)
equals attention over the full cache with the evicted positions masked out.

A merging reducer gives each stored token a *log mass* (``bias``): a kept token that absorbed others
stands for their attention too, so its logit is raised by the log of the mass it carries
(:func:`tokensift.reduce.kvmerge.fold_into_kept`). Low-precision storage lives in
:class:`tokensift.kv.lowbits.QuantizedLayer`, a subclass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import CacheLayerMixin, DynamicCache, DynamicLayer

from tokensift.errors import MethodUnsupportedError, ModelError
from tokensift.reduce import gather_tokens
from tokensift.scores.attention import attention_with_lse

Segments = list[list[Tensor]]
"""``segments[row][head]``: a ``[L, D]`` tensor (or, for attention weights, an ``[L]`` one)."""

_ATTACHED = [0]
"""How many :func:`tokensift.kv.attach.attached` blocks are open (a ragged cache is only valid inside one)."""


def tensor_bytes(tensor: Tensor) -> int:
    """Bytes of the storage behind ``tensor`` (a view into a larger tensor counts the whole storage)."""
    return int(tensor.untyped_storage().nbytes())


def _query_length(query: int | Tensor) -> int:
    """transformers < 5.3 passes the cache positions of the queries instead of their number (kvpress peer)."""
    return query if isinstance(query, int) else int(query.shape[0])


def gather_segments(keys: Tensor, values: Tensor, selection: list[list[Tensor]]) -> tuple[Segments, Segments]:
    """Per (row, head), ``keys, values [B, Hkv, T, D]`` gathered at ``selection[row][head]``: ``[L, D]`` each."""
    seg_k = [[gather_tokens(keys[b, h], idx) for h, idx in enumerate(row)] for b, row in enumerate(selection)]
    seg_v = [[gather_tokens(values[b, h], idx) for h, idx in enumerate(row)] for b, row in enumerate(selection)]
    return seg_k, seg_v


def bias_mask(bias: Tensor, group: int, dtype: torch.dtype, allowed: Tensor | None) -> Tensor:
    """SDPA's additive mask from log masses ``bias [B, Hkv, L]``: repeated for the ``group`` query heads of each
    KV head, ``-inf`` where ``allowed`` (boolean, broadcast to ``[B, H, q, L]``) is False."""
    mask = bias[:, :, None].to(dtype).repeat_interleave(group, dim=1)
    return mask if allowed is None else mask.masked_fill(~allowed, float("-inf"))


def _future_mask(n_queries: int, length: int, device: torch.device) -> Tensor:
    """``[q, L]`` True where query ``i`` (the last ``q`` positions are the queries) must not look."""
    return (
        torch.arange(length, device=device)[None, :] > torch.arange(length - n_queries, length, device=device)[:, None]
    )


class RaggedLayer(CacheLayerMixin):
    """One layer's cache: per (row, head) key/value tensors of their own length (dense when all equal)."""

    is_sliding = False
    is_compileable = False
    is_croppable = False
    keys: Tensor
    values: Tensor

    def __init__(self, keys: Segments, values: Segments, bias: Segments | None = None) -> None:
        super().__init__()
        first = keys[0][0]
        self.dtype, self.device = first.dtype, first.device
        self.is_initialized = True
        self._store(keys, values, bias)

    def _store(self, keys: Segments, values: Segments, bias: Segments | None = None) -> None:
        lengths = {k.shape[0] for row in keys for k in row}
        self.segments_k: Segments | None = None
        self.segments_v: Segments | None = None
        self.segments_b: Segments | None = None
        self.bias: Tensor | None = None
        """``[B, Hkv, L]`` log mass of each stored token (dense layout; ``segments_b`` when ragged), or None."""
        if len(lengths) == 1:
            self.keys = torch.stack([torch.stack(row) for row in keys])
            self.values = torch.stack([torch.stack(row) for row in values])
            if bias is not None:
                self.bias = torch.stack([torch.stack(row) for row in bias])
        else:
            self.segments_k, self.segments_v, self.segments_b = keys, values, bias
            first_k, first_v = keys[0][0], values[0][0]  # zero-length placeholders answer shape queries
            self.keys = first_k.new_empty(len(keys), len(keys[0]), 0, first_k.shape[-1])
            self.values = first_v.new_empty(len(keys), len(keys[0]), 0, first_v.shape[-1])

    @property
    def dense(self) -> bool:
        return self.segments_k is None

    @classmethod
    def from_selection(cls, keys: Tensor, values: Tensor, selection: list[list[Tensor]]) -> RaggedLayer:
        """Gather ``keys, values [B, Hkv, T, D]`` at ``selection[row][head]`` (ascending positions)."""
        return cls(*gather_segments(keys, values, selection))

    def segment(self, row: int, head: int) -> tuple[Tensor, Tensor]:
        """Keys and values ``[L, D]`` stored for one (row, head)."""
        if self.segments_k is None or self.segments_v is None:
            return self.keys[row, head], self.values[row, head]
        return self.segments_k[row][head], self.segments_v[row][head]

    def segment_bias(self, row: int, head: int) -> Tensor | None:
        """Log mass ``[L]`` of one (row, head)'s tokens, or None when no token carries any."""
        if self.segments_b is not None:
            return self.segments_b[row][head]
        return None if self.bias is None else self.bias[row, head]

    def keep(self, selection: list[list[Tensor]]) -> None:
        """Keep only ``selection[row][head]`` (indices into what each head holds now)."""
        rows, heads = len(selection), len(selection[0])
        pairs = [[self.segment(b, h) for h in range(heads)] for b in range(rows)]
        keys = [[gather_tokens(pairs[b][h][0], selection[b][h]) for h in range(heads)] for b in range(rows)]
        values = [[gather_tokens(pairs[b][h][1], selection[b][h]) for h in range(heads)] for b in range(rows)]
        bias = None
        if self.bias is not None or self.segments_b is not None:
            bias = [[self.segment_bias(b, h)[selection[b][h]] for h in range(heads)] for b in range(rows)]  # type: ignore[index]
        self._store(keys, values, bias)

    # --- what transformers asks of a layer ------------------------------------------------------------------
    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:  # already initialised
        return None

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        """Append the new ``[B, Hkv, q, D]`` states to every (row, head); returns them unchanged.

        Attention over the whole cache is :meth:`attend`, called by a KV session's handler on the attention
        router; outside a session (``tokensift.kv.compress``, a press's ``with press(model)``, ``bounded``)
        there is none, so this refuses.
        """
        if not _ATTACHED[0]:
            raise ModelError("a compressed (ragged) KV cache can only be used inside tokensift.kv.compress(...)")
        n_new = key_states.shape[2]
        if self.segments_k is None or self.segments_v is None:
            self.keys = torch.cat([self.keys, key_states], dim=2)
            self.values = torch.cat([self.values, value_states], dim=2)
            if self.bias is not None:
                self.bias = torch.cat([self.bias, self.bias.new_zeros(*self.bias.shape[:2], n_new)], dim=2)
            return key_states, value_states
        for b, (row_k, row_v) in enumerate(zip(self.segments_k, self.segments_v, strict=True)):
            for h in range(len(row_k)):
                row_k[h] = torch.cat([row_k[h], key_states[b, h]])
                row_v[h] = torch.cat([row_v[h], value_states[b, h]])
                if self.segments_b is not None:
                    self.segments_b[b][h] = torch.cat([self.segments_b[b][h], self.segments_b[b][h].new_zeros(n_new)])
        return key_states, value_states

    def get_mask_sizes(self, query_length: int | Tensor) -> tuple[int, int]:
        return self.get_seq_length() + _query_length(query_length), 0

    def get_seq_length(self) -> int:
        """The longest (row, head) length (heads may hold fewer)."""
        return int(self.lengths().max())

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:  # the name of get_max_length before transformers 5.3 (kvpress peer)
        return -1

    def reset(self) -> None:
        raise ModelError("a compressed KV cache cannot be reset; build a new cache instead")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep (and reorder) the batch rows ``indices``."""
        if self.segments_k is not None and self.segments_v is not None:
            rows = [int(i) for i in indices.tolist()]
            self.segments_k = [list(self.segments_k[i]) for i in rows]
            self.segments_v = [list(self.segments_v[i]) for i in rows]
            if self.segments_b is not None:
                self.segments_b = [list(self.segments_b[i]) for i in rows]
        self.keys, self.values = self.keys[indices], self.values[indices]
        if self.bias is not None:
            self.bias = self.bias[indices]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.batch_select_indices(torch.arange(self.keys.shape[0], device=self.keys.device).repeat_interleave(repeats))

    # --- ours -----------------------------------------------------------------------------------------------
    def lengths(self) -> Tensor:
        """``[B, Hkv]`` tokens stored per row and head."""
        if self.segments_k is None:
            return torch.full(self.keys.shape[:2], self.keys.shape[2])
        return torch.tensor([[k.shape[0] for k in row] for row in self.segments_k])

    def full_lengths(self) -> Tensor:
        """``[B, Hkv]`` tokens stored at the model's precision (all of them here)."""
        return self.lengths()

    def kept_lengths(self) -> Tensor:
        """``[B, Hkv]`` tokens the press selected (what a session reports as kept): here those at full precision."""
        return self.full_lengths()

    def nbytes(self) -> int:
        """Bytes really stored (keys + values, and the log masses of merged tokens)."""
        if self.segments_k is None or self.segments_v is None:
            extra = 0 if self.bias is None else tensor_bytes(self.bias)
            return tensor_bytes(self.keys) + tensor_bytes(self.values) + extra
        stored = [self.segments_k, self.segments_v] + ([self.segments_b] if self.segments_b is not None else [])
        return sum(tensor_bytes(t) for rows in stored for row in rows for t in row)

    def copy(self) -> RaggedLayer:
        """An independent copy (stored tensors are never changed in place, so they are shared)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if self.segments_k is not None and self.segments_v is not None:
            clone.segments_k = [list(r) for r in self.segments_k]
            clone.segments_v = [list(r) for r in self.segments_v]
        if self.segments_b is not None:
            clone.segments_b = [list(r) for r in self.segments_b]
        return clone

    def attend(self, query: Tensor, scaling: float, *, need_weights: bool = False) -> tuple[Tensor, Segments | None]:
        """Attention of ``query [B, H, q, D]`` (the last ``q`` cached tokens are its own, causal) over the cache.

        Returns the output ``[B, q, H, Dv]`` (transformers' layout) and, if asked, the attention each cached
        token received per (row, KV head), summed over the ``q`` rows and averaged over the query heads.
        """
        if self.segments_k is None and not need_weights:
            if self.bias is None and 1 < query.shape[2] < self.keys.shape[2] and query.shape[0] == 1:
                n = self.keys.shape[2] - query.shape[2]  # a prefill chunk after the kept tokens: no mask needed
                out, _ = attention_with_lse(query[0], self.keys[0], self.values[0], n, scaling=scaling)
                return out.transpose(0, 1)[None].contiguous(), None
            mask: Tensor | None = None
            if query.shape[2] > 1:
                mask = ~_future_mask(query.shape[2], self.keys.shape[2], query.device)
            if self.bias is not None:
                mask = bias_mask(self.bias, query.shape[1] // self.keys.shape[1], query.dtype, mask)
            out = torch.nn.functional.scaled_dot_product_attention(
                query, self.keys, self.values, attn_mask=mask, scale=scaling, enable_gqa=True
            )
            return out.transpose(1, 2).contiguous(), None
        batch, heads, n_queries, _ = query.shape
        kv_heads = self.keys.shape[1]
        group = heads // kv_heads
        out = query.new_empty(batch, heads, n_queries, self.values.shape[-1])
        if n_queries == 1 and not need_weights and self.bias is None and self.segments_b is None:
            # a decoding step: each (row, head) through SDPA's fused kernel (no mask needed for one query)
            for b in range(batch):
                for h in range(kv_heads):
                    keys, values = self.segment(b, h)
                    rows = slice(h * group, (h + 1) * group)
                    out[b, rows] = torch.nn.functional.scaled_dot_product_attention(
                        query[b : b + 1, rows], keys[None, None], values[None, None], scale=scaling, enable_gqa=True
                    )[0]
            return out.transpose(1, 2).contiguous(), None
        weights: Segments = []
        for b in range(batch):
            row_weights = []
            for h in range(kv_heads):
                keys, values = self.segment(b, h)
                q = query[b, h * group : (h + 1) * group]  # [G, q, D]
                logits = (q.float() @ keys.float().T) * scaling
                log_mass = self.segment_bias(b, h)
                if log_mass is not None:
                    logits = logits + log_mass.float()
                if n_queries > 1:
                    logits = logits.masked_fill(_future_mask(n_queries, keys.shape[0], q.device), float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                out[b, h * group : (h + 1) * group] = (probs @ values.float()).to(out.dtype)
                row_weights.append(probs.sum(1).mean(0))
            weights.append(row_weights)
        return out.transpose(1, 2).contiguous(), weights if need_weights else None


def cache_bytes(cache: object) -> int:
    """Bytes stored by every attention layer of a transformers cache (ragged or dense)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        if isinstance(layer, RaggedLayer):
            total += layer.nbytes()
        elif getattr(layer, "keys", None) is not None and layer.keys.numel():
            total += tensor_bytes(layer.keys) + tensor_bytes(layer.values)
    return total


def tokens_per_head(cache: object) -> list[list[list[int]]]:
    """``[layer][row][head]`` tokens stored."""
    result = []
    for layer in getattr(cache, "layers", []):
        if isinstance(layer, RaggedLayer):
            result.append(layer.lengths().tolist())
        elif getattr(layer, "keys", None) is not None:
            b, h, n = layer.keys.shape[:3]
            result.append([[int(n)] * h for _ in range(b)])
    return result


class MaskedLayer(CacheLayerMixin):
    """Full-width storage with a per (row, head) validity mask: eviction by masking, as kvpress does for AdaKV.

    It saves no memory; it exists to run many compressed variants of one context as a single batch (the
    benchmark) and as the reference :class:`RaggedLayer` is checked against. Room for ``extra`` new
    tokens is allocated up front, so decoding writes in place.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False
    keys: Tensor
    values: Tensor

    def __init__(self, keys: Tensor, values: Tensor, valid: Tensor, extra: int = 64) -> None:
        super().__init__()
        batch, heads, n, _ = keys.shape
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._keys = keys.new_zeros(batch, heads, n + extra, keys.shape[-1])
        self._values = values.new_zeros(batch, heads, n + extra, values.shape[-1])
        self._valid = torch.zeros(batch, heads, n + extra, dtype=torch.bool, device=keys.device)
        self._keys[:, :, :n], self._values[:, :, :n], self._valid[:, :, :n] = keys, values, valid
        self.end = n
        self.keys, self.values = self._keys[:, :, :n], self._values[:, :, :n]
        self._bias: Tensor | None = None
        """``[B, Hkv, n + extra]`` log mass per slot, once a row holds merged tokens (:meth:`place`)."""

    def place(self, row: int, layer: RaggedLayer) -> None:
        """Make batch row ``row`` hold what ``layer`` (batch 1) stores, in its first slots: a packing or merging
        method's cache, attended to as it would be (attention does not depend on the slots' order)."""
        for h in range(self._keys.shape[1]):
            keys, values = layer.segment(0, h)
            n = keys.shape[0]
            if n > self.end:
                raise ValueError(f"a placed layer holds {n} tokens, more than the {self.end} slots of the row")
            self._keys[row, h, :n], self._values[row, h, :n] = keys, values
            self._valid[row, h, : self.end] = False
            self._valid[row, h, :n] = True
            bias = layer.segment_bias(0, h)
            if bias is not None:
                if self._bias is None:
                    self._bias = self._keys.new_zeros(self._keys.shape[:3])
                self._bias[row, h, :n] = bias

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        return None

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        n_new = key_states.shape[2]
        if self.end + n_new > self._keys.shape[2]:  # out of room: grow
            grow = max(n_new, 64)
            self._keys = torch.cat(
                [self._keys, self._keys.new_zeros(*self._keys.shape[:2], grow, self._keys.shape[3])], 2
            )
            self._values = torch.cat(
                [self._values, self._values.new_zeros(*self._values.shape[:2], grow, self._values.shape[3])], 2
            )
            self._valid = torch.cat([self._valid, self._valid.new_zeros(*self._valid.shape[:2], grow)], 2)
            if self._bias is not None:
                self._bias = torch.cat([self._bias, self._bias.new_zeros(*self._bias.shape[:2], grow)], 2)
        span = slice(self.end, self.end + n_new)
        self._keys[:, :, span], self._values[:, :, span], self._valid[:, :, span] = key_states, value_states, True
        self.end += n_new
        self.keys, self.values = self._keys[:, :, : self.end], self._values[:, :, : self.end]
        return key_states, value_states

    def get_mask_sizes(self, query_length: int | Tensor) -> tuple[int, int]:
        return self.end + _query_length(query_length), 0

    def get_seq_length(self) -> int:
        return self.end

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:  # the name of get_max_length before transformers 5.3 (kvpress peer)
        return -1

    def lengths(self) -> Tensor:
        """``[B, Hkv]`` valid (kept) tokens per row and head."""
        return self._valid[:, :, : self.end].sum(-1)

    def copy(self) -> MaskedLayer:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._keys, clone._values, clone._valid = self._keys.clone(), self._values.clone(), self._valid.clone()
        clone._bias = None if self._bias is None else self._bias.clone()
        clone.keys, clone.values = clone._keys[:, :, : self.end], clone._values[:, :, : self.end]
        return clone

    def attend(self, query: Tensor, scaling: float, *, need_weights: bool = False) -> tuple[Tensor, None]:
        """Attention of ``query [B, H, q, D]`` over the valid tokens (new tokens causal); ``[B, q, H, Dv]``."""
        group = query.shape[1] // self.keys.shape[1]
        mask = self._valid[:, :, None, : self.end].repeat_interleave(group, dim=1)
        if query.shape[2] > 1:
            mask = mask & ~_future_mask(query.shape[2], self.end, query.device)
        attn_mask = mask if self._bias is None else bias_mask(self._bias[:, :, : self.end], group, query.dtype, mask)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, self.keys, self.values, attn_mask=attn_mask, scale=scaling, enable_gqa=True
        )
        return out.transpose(1, 2).contiguous(), None


class PositionWindowLayer(CacheLayerMixin):
    """A sliding-window layer over tokens that are not contiguous: each entry keeps its original position, and a
    query at position ``p`` attends to the entries at ``p - window < q <= p`` — the window counted in positions,
    not in entries, as the model was trained.

    PromptDistill's later layers hold only the kept tokens, at their original positions: transformers' own
    sliding layer would slide over the last ``window`` *entries*, which span many more positions (and their keys
    are rotated by distances the local layers never saw). The positions of each update are those given to
    :meth:`expect` before it, else the ones right after the last stored entry (decoding). Entries no later query
    can reach are let go at the next update. Attention is :meth:`attend` (a KV session's handler calls it; the
    model's own sliding mask is not used). ``get_seq_length`` counts the updates' tokens in the full-attention
    layers' index space (``seen``), so transformers' masks for those layers stay right.
    """

    is_sliding = True
    is_compileable = False
    is_croppable = False
    keys: Tensor
    values: Tensor

    def __init__(
        self,
        window: int,
        keys: Tensor | None = None,
        values: Tensor | None = None,
        positions: Tensor | None = None,
        seen: int = 0,
    ) -> None:
        super().__init__()
        self.window = window
        self.seen = seen
        self.positions = positions
        self.query_positions: Tensor | None = None
        self._expected: Tensor | None = None
        if keys is not None and values is not None and positions is not None:
            self.keys, self.values = keys, values
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states[:, :, :0]
        self.values = value_states[:, :, :0]
        self.positions = torch.zeros(0, dtype=torch.long, device=key_states.device)
        self.is_initialized = True

    def expect(self, positions: Tensor) -> None:
        """The original positions ``[q]`` of the next update's tokens."""
        self._expected = positions.reshape(-1)

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        if not _ATTACHED[0]:
            raise ModelError("a position-windowed KV cache can only be used inside tokensift.kv.compress(...)")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.positions is not None
        n_new = key_states.shape[2]
        if self._expected is not None:
            new = self._expected.to(self.positions.device)
            if new.numel() != n_new:
                raise ModelError(f"expected positions for {new.numel()} tokens, the update has {n_new}")
            self._expected = None
        else:
            start = int(self.positions[-1]) + 1 if self.positions.numel() else self.seen
            new = torch.arange(start, start + n_new, device=self.positions.device)
        reachable = self.positions > new[0] - self.window  # the earliest new query's window
        self.keys = torch.cat([self.keys[:, :, reachable], key_states], dim=2)
        self.values = torch.cat([self.values[:, :, reachable], value_states], dim=2)
        self.positions = torch.cat([self.positions[reachable], new])
        self.query_positions = new
        self.seen += n_new
        return self.keys, self.values

    def attend(self, query: Tensor, scaling: float) -> tuple[Tensor, None]:
        """Attention of the last update's queries ``[B, H, q, D]``; returns ``[B, q, H, Dv]``."""
        assert self.positions is not None and self.query_positions is not None
        q_pos, k_pos = self.query_positions[:, None], self.positions[None, :]
        allowed = (k_pos <= q_pos) & (q_pos - k_pos < self.window)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, self.keys, self.values, attn_mask=allowed, scale=scaling, enable_gqa=True
        )
        return out.transpose(1, 2).contiguous(), None

    def get_mask_sizes(self, query_length: int | Tensor) -> tuple[int, int]:
        stored = 0 if self.positions is None else int(self.positions.numel())
        return stored + _query_length(query_length), 0

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:
        return self.window

    def copy(self) -> PositionWindowLayer:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone  # updates replace the tensors, never write into them


def dense_cache(cache: Any) -> DynamicCache:
    """The compressed ``cache`` as an ordinary transformers ``DynamicCache`` that decodes without tokensift.

    Every compressed layer must hold the same number of tokens in every (row, head) at the model's precision
    with no log masses (KVCompose's composite tokens, or any uniform per-head budget); layers may differ in
    length. Layers tokensift did not compress are passed on as they are. Raises
    :class:`~tokensift.errors.MethodUnsupportedError` for a ragged, packed or merged layer.
    """
    layers: list[Any] = []
    for idx, layer in enumerate(getattr(cache, "layers", [])):
        if not isinstance(layer, RaggedLayer):
            layers.append(layer)
            continue
        if type(layer) is not RaggedLayer or not layer.dense or layer.bias is not None:
            raise MethodUnsupportedError(
                f"layer {idx} is not a dense cache (heads of different lengths, packed or merged tokens); "
                "use a method that keeps the same number of tokens per head, such as kvcompose"
            )
        fresh = DynamicLayer()
        fresh.update(layer.keys, layer.values)
        layers.append(fresh)
    out = DynamicCache()
    out.layers = layers
    return out


def generate_inputs(dense: DynamicCache, context_length: int, new_tokens: int) -> dict[str, Any]:
    """What ``model.generate(new_ids, **generate_inputs(...))`` needs to continue from a :func:`dense_cache`.

    The compressed cache is shorter than the context, and its layers may differ in length, so positions and the
    attention mask cannot be inferred from it: the new tokens go at positions ``context_length …`` (the rotary
    positions they would have had), one at a time (``prefill_chunk_size=1``: a one-token step needs no mask, so
    every layer's own length is fine). generate reads positions and the mask from the cache's first layer's
    length ``L``, so both are given for ``L`` tokens before the new ones (the first ``L`` positions are unused).
    """
    stored = dense.get_seq_length()
    first: Any = dense.layers[0]
    device = first.keys.device
    positions = torch.cat(
        [
            torch.zeros(stored, dtype=torch.long, device=device),
            torch.arange(context_length, context_length + new_tokens, device=device),
        ]
    )
    return {
        "past_key_values": dense,
        "attention_mask": torch.ones(1, stored + new_tokens, dtype=torch.long, device=device),
        "position_ids": positions[None],
        "prefill_chunk_size": 1,
    }


def compact(cache: Any) -> None:
    """Let go of storage a cache layer no longer uses: transformers' sliding-window layer keeps its window as a
    view of the last update, so after a prefill (or a chunk) of many tokens the whole update stays allocated."""
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, Tensor) and tensor.untyped_storage().nbytes() > tensor.nbytes:
                setattr(layer, name, tensor.clone())
