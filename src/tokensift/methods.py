"""The method registry: a method is a named composition of a scorer, a selector and a reducer.

The CLI, the benchmark and the Python API all look methods up here by ``(target, name)``. Adding a
method is one module with its parts plus one :func:`register` call below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from tokensift.errors import ParameterError, UnknownMethodError
from tokensift.reduce import drop_units, gather_tokens
from tokensift.scores import lm_scores, random_scores
from tokensift.scores.gradient import gradient_x_input
from tokensift.select import knapsack_select, topk_indices
from tokensift.text.methods.attribution import AttributionMethod
from tokensift.text.methods.llmlingua import LLMLinguaMethod
from tokensift.text.methods.longllmlingua import LongLLMLinguaMethod
from tokensift.text.methods.random import RandomMethod
from tokensift.text.methods.selective_context import SelectiveContextMethod
from tokensift.text.methods.surprisal import SurprisalMethod

Target = Literal["kv", "text", "encoder", "vision", "training"]
TARGETS: tuple[str, ...] = get_args(Target)


@dataclass(frozen=True)
class Method:
    """A registered method: its parts, the paper it implements and the defaults the paper uses."""

    name: str
    target: Target
    paper: str
    score: Callable[..., Any]
    select: Callable[..., Any]
    reduce: Callable[..., Any]
    summary: str
    needs_attention: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    build: Callable[..., Any] | None = None
    """The adapter's object for this method (e.g. a KV press or an encoder reducer), built from options."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (parts by function name)."""
        return {
            "name": self.name,
            "target": self.target,
            "summary": self.summary,
            "paper": self.paper,
            "needs_attention": self.needs_attention,
            "score": self.score.__name__,
            "select": self.select.__name__,
            "reduce": self.reduce.__name__,
            "defaults": dict(self.defaults),
        }


_REGISTRY: dict[tuple[str, str], Method] = {}


def register(method: Method) -> Method:
    """Add ``method``; a second method with the same target and name is a programming error."""
    key = (method.target, method.name)
    if key in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered for target {method.target!r}")
    _REGISTRY[key] = method
    return method


def list_methods(target: str | None = None) -> list[Method]:
    """Registered methods, sorted by target then name, optionally of one target."""
    if target is not None and target not in TARGETS:
        raise ParameterError(f"unknown target {target!r}; targets are: {', '.join(TARGETS)}")
    return [m for key, m in sorted(_REGISTRY.items()) if target is None or m.target == target]


def get_method(name: str, target: str) -> Method:
    """The method ``name`` for ``target``; :class:`UnknownMethodError` lists the known ones."""
    try:
        return _REGISTRY[(target, name)]
    except KeyError:
        known = ", ".join(m.name for m in list_methods(target)) or "none yet"
        raise UnknownMethodError(f"unknown {target} method {name!r}; known: {known}") from None


# --- kv methods ---------------------------------------------------------------------------------------------
from tokensift.kv.methods import (  # noqa: E402  # noqa: E402
    a2sf,
    adakv,
    chunkkv,
    expected_attention,
    h2o,
    keydiff,
    knorm,
    kvzip,
    pyramidkv,
    snapkv,
    streaming_llm,
    tova,
)
from tokensift.kv.methods import random as kv_random  # noqa: E402
from tokensift.scores import (  # noqa: E402
    attention_received,
    expected_attention_scores,
    key_diff_score,
    key_norm_score,
    reconstruction_attention,
)
from tokensift.select import chunk_indices, global_indices, head_adaptive_indices, pyramid_budgets  # noqa: E402

register(
    Method(
        name="random",
        target="kv",
        summary="keep a uniformly random subset of tokens (the baseline every method must beat)",
        paper="baseline (no paper); the control in e.g. Li et al., 2024, SnapKV",
        score=random_scores,
        select=topk_indices,
        reduce=gather_tokens,
        defaults={"seed": 0},
        build=kv_random.RandomPress,
    )
)
register(
    Method(
        name="streaming_llm",
        target="kv",
        summary="attention sinks + recent window",
        paper="Xiao et al., 2024, Efficient Streaming Language Models with Attention Sinks",
        score=streaming_llm.recency,
        select=topk_indices,
        reduce=gather_tokens,
        defaults={"protect_first": 4},
        build=streaming_llm.StreamingLLMPress,
    )
)
register(
    Method(
        name="h2o",
        target="kv",
        summary="heavy hitters (accumulated attention) + recent half",
        paper="Zhang et al., 2023, H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs",
        score=attention_received,
        select=topk_indices,
        reduce=gather_tokens,
        needs_attention=True,
        defaults={"recent_share": 0.5},
        build=h2o.H2OPress,
    )
)
register(
    Method(
        name="tova",
        target="kv",
        summary="attention of the current (last) token, mean over the layer's heads",
        paper="Oren et al., 2024, Transformers are Multi-State RNNs (TOVA)",
        score=attention_received,
        select=topk_indices,
        reduce=gather_tokens,
        needs_attention=True,
        build=tova.TOVAPress,
    )
)
register(
    Method(
        name="snapkv",
        target="kv",
        summary="observation-window attention, pooled; window kept",
        paper="Li et al., 2024, SnapKV: LLM Knows What You are Looking for Before Generation",
        score=snapkv.pool_scores,
        select=topk_indices,
        reduce=gather_tokens,
        needs_attention=True,
        defaults={"window": 32, "kernel": 7},
        build=snapkv.SnapKVPress,
    )
)
register(
    Method(
        name="pyramidkv",
        target="kv",
        summary="SnapKV scores, layer budgets shrinking with depth",
        paper="Cai et al., 2024, PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling",
        score=snapkv.pool_scores,
        select=pyramid_budgets,
        reduce=gather_tokens,
        needs_attention=True,
        defaults={"window": 32, "kernel": 7, "beta": 20.0},
        build=pyramidkv.PyramidKVPress,
    )
)
register(
    Method(
        name="knorm",
        target="kv",
        summary="keep the lowest-norm keys",
        paper="Devoto et al., 2024, A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression",
        score=key_norm_score,
        select=topk_indices,
        reduce=gather_tokens,
        build=knorm.KnormPress,
    )
)
register(
    Method(
        name="keydiff",
        target="kv",
        summary="keep the keys least similar to the mean key",
        paper="Park et al., 2025, KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM Inference",
        score=key_diff_score,
        select=topk_indices,
        reduce=gather_tokens,
        build=keydiff.KeyDiffPress,
    )
)
register(
    Method(
        name="expected_attention",
        target="kv",
        summary="attention expected from the future-query distribution x value norm",
        paper=(
            "Devoto et al., 2025, Expected Attention: KV Cache Compression by Estimating"
            " Attention from Future Queries Distribution"
        ),
        score=expected_attention_scores,
        select=topk_indices,
        reduce=gather_tokens,
        defaults={"n_future": 512, "protect_first": 4},
        build=expected_attention.ExpectedAttentionPress,
    )
)
register(
    Method(
        name="chunkkv",
        target="kv",
        summary="whole chunks by SnapKV score, indices reused across layer pairs",
        paper=(
            "Liu et al., 2025, ChunkKV: Semantic-Preserving KV Cache Compression for"
            " Efficient Long-Context LLM Inference"
        ),
        score=snapkv.pool_scores,
        select=chunk_indices,
        reduce=gather_tokens,
        needs_attention=True,
        defaults={"chunk": 10, "reuse": 2},
        build=chunkkv.ChunkKVPress,
    )
)
register(
    Method(
        name="a2sf",
        target="kv",
        summary="accumulated attention with a forgetting factor",
        paper=(
            "Jo & Shin, 2024, A2SF: Accumulative Attention Scoring with Forgetting Factor"
            " for Token Pruning in Transformer Decoder"
        ),
        score=attention_received,
        select=topk_indices,
        reduce=gather_tokens,
        needs_attention=True,
        defaults={"forgetting": 0.98},
        build=a2sf.A2SFPress,
    )
)
register(
    Method(
        name="adakv",
        target="kv",
        summary="SnapKV scores, budget shared adaptively across heads (ragged cache)",
        paper="Feng et al., 2024, Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation",
        score=snapkv.pool_scores,
        select=head_adaptive_indices,
        reduce=gather_tokens,
        needs_attention=True,
        defaults={"safeguard": 0.2},
        build=adakv.AdaKVPress,
    )
)
register(
    Method(
        name="kvzip",
        target="kv",
        summary="attention from a pass that repeats the context; one budget for all layers and heads (ragged)",
        paper="Kim et al., 2025, KVzip: Query-Agnostic KV Cache Compression with Context Reconstruction",
        score=reconstruction_attention,
        select=global_indices,
        reduce=gather_tokens,
        defaults={"protect_first": 4, "chunk": 2048},
        build=kvzip.KVzipPress,
    )
)

# --- text methods -------------------------------------------------------------------------------------------
register(
    Method(
        name="random",
        target="text",
        summary="keep random words at the same exact budget (baseline)",
        paper="baseline (no paper); the control in Li et al., 2023, Selective Context",
        score=random_scores,
        select=knapsack_select,
        reduce=drop_units,
        defaults={"seed": 0, "granularity": "word"},
        build=RandomMethod,
    )
)
register(
    Method(
        name="surprisal",
        target="text",
        summary="one LM pass; keep the words with the most self-information",
        paper="self-information as in Li et al., 2023 (EMNLP) and Jiang et al., 2023 (EMNLP)",
        score=lm_scores,
        select=knapsack_select,
        reduce=drop_units,
        build=SurprisalMethod,
    )
)
register(
    Method(
        name="selective_context",
        target="text",
        summary="self-information of lexical units (phrases / sentences), exact budget",
        paper="Li et al., 2023, Compressing Context to Enhance Inference Efficiency of LLMs (EMNLP)",
        score=lm_scores,
        select=knapsack_select,
        reduce=drop_units,
        defaults={"granularity": "phrase"},
        build=SelectiveContextMethod,
    )
)
register(
    Method(
        name="llmlingua",
        target="text",
        summary="budget controller over blocks, then iterative word-level compression on a pruned KV cache",
        paper="Jiang et al., 2023, LLMLingua: Compressing Prompts for Accelerated Inference of LLMs (EMNLP)",
        score=lm_scores,
        select=knapsack_select,
        reduce=drop_units,
        defaults={"segment_tokens": 200, "coarse_factor": 2.0},
        build=LLMLinguaMethod,
    )
)
register(
    Method(
        name="longllmlingua",
        target="text",
        summary="question-aware document ranking, contrastive perplexity, dynamic per-document rates",
        paper="Jiang et al., 2024, LongLLMLingua: Accelerating and Enhancing LLMs in Long Context Scenarios via "
        "Prompt Compression (ACL)",
        score=lm_scores,
        select=knapsack_select,
        reduce=drop_units,
        defaults={"coarse_factor": 2.0, "dynamic_ratio": 0.3, "reorder": False},
        build=LongLLMLinguaMethod,
    )
)
register(
    Method(
        name="attribution",
        target="text",
        summary="gradient x input toward the model's own continuation (FrugalPrompt-style)",
        paper="Raiyan et al., 2025, FrugalPrompt: Reducing Contextual Overhead in LLMs via Token Attribution",
        score=gradient_x_input,
        select=knapsack_select,
        reduce=drop_units,
        defaults={"continuation_tokens": 8, "window": 1024},
        build=AttributionMethod,
    )
)

# --- encoder methods ----------------------------------------------------------------------------------------
from tokensift.encoder import methods as enc  # noqa: E402
from tokensift.reduce import merge  # noqa: E402
from tokensift.scores import graph, redundancy, shift  # noqa: E402
from tokensift.select import diversity, matching, rowwise  # noqa: E402

_ENC: Target = "encoder"
_TOME = "Bolya et al., 2023, Token Merging: Your ViT But Faster"
_PITOME = "Tran et al., 2024, Accelerating Transformers with Spectrum-Preserving Token Merging"
_EVIT = "Liang et al., 2022, Not All Patches are What You Need: Expediting ViTs via Token Reorganizations"
_ZTP = "Wang et al., 2024, Zero-TPrune: Zero-Shot Token Pruning through Leveraging of the Attention Graph"
_RS = "Choi et al., 2025, Representation Shift: Unifying Token Compression with FlashAttention"
_DIV = "Alvar et al., 2025, DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models"
register(
    Method(
        name="tome",
        target=_ENC,
        paper=_TOME,
        score=matching.cosine_similarity_matrix,
        select=matching.bipartite_soft_matching,
        reduce=merge.scatter_mean,
        summary="merge the most similar A->B token pairs (keys), size-weighted; proportional attention",
        build=enc.ToMe,
    )
)
register(
    Method(
        name="pitome",
        target=_ENC,
        paper=_PITOME,
        score=redundancy.energy_score,
        select=matching.energy_matching,
        reduce=merge.scatter_mean,
        summary="merge only high-energy (redundant) tokens; isolated tokens are protected",
        build=enc.PiToMe,
    )
)
register(
    Method(
        name="evit",
        target=_ENC,
        paper=_EVIT,
        score=attention_received,
        select=rowwise.topk_mask,
        reduce=merge.scatter_mean,
        summary="keep the tokens [CLS] attends to most, fuse the rest into one token",
        needs_attention=True,
        build=enc.EViT,
    )
)
register(
    Method(
        name="zero_tprune",
        target=_ENC,
        paper=_ZTP,
        score=graph.weighted_page_rank,
        select=matching.best_sources,
        reduce=merge.drop_target,
        summary="page-rank importance on the attention graph; prune unimportant tokens similar to important ones",
        needs_attention=True,
        build=enc.ZeroTPrune,
    )
)
register(
    Method(
        name="repshift",
        target=_ENC,
        paper=_RS,
        score=shift.representation_shift,
        select=rowwise.topk_mask,
        reduce=merge.drop_target,
        summary="keep the tokens the block changed most (no attention weights needed)",
        build=enc.RepShift,
    )
)
register(
    Method(
        name="divprune",
        target=_ENC,
        paper=_DIV,
        score=matching.cosine_similarity_matrix,
        select=diversity.max_min_diversity,
        reduce=merge.drop_target,
        summary="keep a max-min diverse subset of hidden states",
        build=enc.DivPrune,
    )
)
register(
    Method(
        name="random",
        target=_ENC,
        paper="baseline (no paper)",
        score=random_scores,
        select=rowwise.topk_mask,
        reduce=merge.drop_target,
        summary="drop uniformly random tokens under the same budget",
        defaults={"seed": 0},
        build=enc.RandomPrune,
    )
)
