"""The pure merge/prune primitives behind the encoder methods, on small hand-checkable inputs."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensift.encoder.schedule import Schedule
from tokensift.errors import ParameterError
from tokensift.reduce.merge import assign_slots, drop_target, follow_slots, scatter_mean, scatter_sum
from tokensift.scores.graph import weighted_page_rank
from tokensift.scores.redundancy import energy_score
from tokensift.scores.shift import representation_shift
from tokensift.select.diversity import max_min_diversity
from tokensift.select.matching import bipartite_soft_matching, energy_matching
from tokensift.select.rowwise import topk_mask


def tome_reference_pairs(metric: torch.Tensor, r: int, protect_first: bool) -> set[tuple[int, int]]:
    """ToMe's bipartite soft matching written out with loops: A = even, B = odd positions, each A token
    picks its most similar B token, the r best edges merge; [CLS] (position 0) never merges."""
    n = metric.shape[0]
    unit = metric / metric.norm(dim=-1, keepdim=True)
    edges = []
    for a in range(0, n, 2):
        if protect_first and a == 0:
            continue
        sims = [(float(unit[a] @ unit[b]), b) for b in range(1, n, 2)]
        best_sim = max(s for s, _ in sims)
        best_b = next(b for s, b in sims if s == best_sim)
        edges.append((best_sim, a, best_b))
    edges.sort(key=lambda e: -e[0])  # stable: equal similarities keep A order
    return {(a, b) for _, a, b in edges[:r]}


@pytest.mark.parametrize("seed", range(12))
def test_bipartite_matching_chooses_the_same_pairs_as_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 5 + seed
    metric = torch.randn(1, n, 6, generator=gen, dtype=torch.float64)
    r = 1 + seed % ((n - 1) // 2)
    valid = torch.ones(1, n, dtype=torch.bool)
    protected = torch.zeros(1, n, dtype=torch.bool)
    protected[0, 0] = True
    target = bipartite_soft_matching(metric, torch.tensor([r]), valid=valid, protected=protected)[0]
    pairs = {(i, int(t)) for i, t in enumerate(target) if int(t) != i}
    assert pairs == tome_reference_pairs(metric[0], r, protect_first=True)


def test_matching_never_touches_padding_or_protected_tokens():
    metric = torch.ones(1, 8, 4)  # everything identical: every pair is a perfect match
    valid = torch.tensor([[True] * 5 + [False] * 3])
    protected = torch.tensor([[True, False, False, False, True, False, False, False]])
    target = bipartite_soft_matching(metric, torch.tensor([10]), valid=valid, protected=protected)[0]
    moved = {i: int(t) for i, t in enumerate(target) if int(t) != i}
    assert moved == {2: 1}  # sources: even, mergeable, real = {2}; destinations: odd, real = {1, 3}


def test_energy_matching_protects_the_isolated_token():
    base = torch.tensor([1.0, 0.0, 0.0])
    metric = torch.stack([base, base + 0.01, base + 0.02, base + 0.03, torch.tensor([0.0, 0.0, 1.0])])[None]
    valid = torch.ones(1, 5, dtype=torch.bool)
    protected = torch.zeros(1, 5, dtype=torch.bool)
    energy = energy_score(metric, valid=valid, margin=0.5)
    assert int(energy.argmin()) == 4  # the outlier has the lowest energy
    target = energy_matching(metric, energy, torch.tensor([2]), valid=valid, protected=protected)[0]
    assert int(target[4]) == 4 and sum(int(t) != i for i, t in enumerate(target)) == 2


def test_slots_keep_position_order_and_sizes_add_up():
    target = torch.tensor([[0, 0, 2, 2, -1, 5]])
    valid = torch.tensor([[True, True, True, True, True, False]])
    slot, out_valid = assign_slots(target, valid)
    assert slot.tolist() == [[0, 0, 1, 1, -1, -1]] and out_valid.tolist() == [[True, True]]
    sizes = torch.tensor([[1.0, 3.0, 1.0, 1.0, 1.0, 0.0]])
    states = torch.tensor([[[0.0], [4.0], [2.0], [4.0], [9.0], [7.0]]])
    merged = scatter_mean(states, slot, 2, sizes)
    assert merged.flatten().tolist() == [3.0, 3.0]  # (0*1 + 4*3) / 4, (2 + 4) / 2
    assert scatter_sum(sizes, slot, 2).tolist() == [[4.0, 2.0]]
    origin = torch.tensor([[0, 1, 2, 3, 4, -1]])
    assert follow_slots(origin, slot).tolist() == [[0, 0, 1, 1, -1, -1]]
    assert drop_target(torch.tensor([[True, False]])).tolist() == [[0, -1]]


def test_topk_mask_has_a_budget_per_row_and_keeps_protected_tokens():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 9.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    protected = torch.tensor([[True, False, False, False, False], [True, False, False, False, False]])
    keep = topk_mask(scores, torch.tensor([3, 2]), valid=valid, protected=protected)
    assert keep.tolist() == [[True, True, False, False, True], [True, False, True, False, False]]


def test_max_min_diversity_spreads_out_from_the_protected_token():
    angles = torch.tensor([0.0, 0.1, 0.2, 1.5, 1.6, 3.0])
    features = torch.stack([angles.cos(), angles.sin()], dim=-1)[None]
    valid = torch.ones(1, 6, dtype=torch.bool)
    protected = torch.tensor([[True, False, False, False, False, False]])
    keep = max_min_diversity(features, torch.tensor([3]), valid=valid, protected=protected)
    assert keep[0].nonzero().flatten().tolist() == [0, 3, 5]


def test_max_min_diversity_seed_without_protected_tokens_and_padding():
    angles = torch.tensor([0.0, 0.05, 1.5, 3.0, 3.0])
    features = torch.stack([angles.cos(), angles.sin()], dim=-1)[None]
    valid = torch.tensor([[True, True, True, True, False]])
    keep = max_min_diversity(features, torch.tensor([2]), valid=valid, protected=torch.zeros_like(valid))
    assert keep[0].nonzero().flatten().tolist() == [0, 3]  # seed: 3 (farthest from its neighbour), then 0
    assert not keep[0, 4]


def divprune_reference(features: torch.Tensor, k: int) -> list[int]:
    """DivPrune's reference selection (the authors' ``DivPrune`` function), written out: cosine distances; the
    first pick is the token whose second-smallest distance in its column (its nearest other token) is largest,
    every next pick the token whose smallest distance to the picks so far is largest."""
    unit = features / features.norm(dim=1, keepdim=True)
    distance = 1.0 - unit @ unit.T
    picks: list[int] = []
    for i in range(k):
        if i == 0:
            scores = torch.topk(distance, 2, dim=0, largest=False).values[1]
        else:
            scores = distance[picks].min(dim=0).values
        picks.append(int(scores.argmax()))
    return picks


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 24), st.integers(1, 12))
def test_max_min_diversity_selects_as_the_reference_code_does(seed, n, k):
    k = min(k, n - 1)
    features = torch.randn(1, n, 6, generator=torch.Generator().manual_seed(seed))
    valid = torch.ones(1, n, dtype=torch.bool)
    keep = max_min_diversity(features, torch.tensor([k]), valid=valid, protected=torch.zeros_like(valid))
    assert set(keep[0].nonzero().flatten().tolist()) == set(divprune_reference(features[0], k))


def test_page_rank_keeps_mass_on_real_tokens():
    attention = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    attention = attention.masked_fill(~valid[:, None, None, :], 0.0)
    attention = attention / attention.sum(-1, keepdim=True)
    score = weighted_page_rank(attention, valid=valid, iterations=10)
    assert torch.allclose(score.sum(-1), torch.ones(2, 3), atol=1e-5)
    assert score[1, :, 3:].abs().max() == 0
    # the iteration written out: each key collects the score of the queries that attend to it
    expected = valid.float() / valid.float().sum(-1, keepdim=True)
    expected = expected[:, None, :].expand(2, 3, 5)
    for _ in range(10):
        expected = torch.stack(
            [sum(expected[..., q] * attention[..., q, k] for q in range(5)) for k in range(5)], dim=-1
        )
    torch.testing.assert_close(score, expected)


def test_representation_shift_is_the_l2_distance():
    before = torch.zeros(1, 2, 2)
    after = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])
    assert representation_shift(before, after).tolist() == [[5.0, 1.0]]


def test_schedules_spread_the_ratio_and_validate():
    initial = torch.tensor([100, 10])
    geometric = Schedule(ratio=0.75)
    assert geometric.reducing_layers(2) == [0, 1]
    assert geometric.target(initial, 0, 2).tolist() == [50, 5]
    assert geometric.target(initial, 1, 2).tolist() == [25, 2]
    assert Schedule(r=3, layers=(1,)).target(initial, 1, 2).tolist() == [97, 7]
    assert Schedule(per_layer=(0.0, 0.5)).reducing_layers(2) == [1]
    assert Schedule(ratio=0.0).reducing_layers(4) == []
    assert Schedule(keep_tokens=20).target(initial, 1, 2).tolist() == [20, 10]  # a shorter row is kept whole
    assert Schedule(keep=0.25).target(initial, 1, 2).tolist() == [25, 2]
    for make, message in [
        (lambda: Schedule(), "exactly one"),
        (lambda: Schedule(ratio=0.5, r=2), "exactly one"),
        (lambda: Schedule(r=-1), "r .* must be a whole number >= 0"),
        (lambda: Schedule(keep=0.0), "keep must be in"),
        (lambda: Schedule(per_layer=(0.1,)).check(2), "has 1 values"),
        (lambda: Schedule(per_layer=(0.1, 1.0)).check(2), "in \\[0, 1\\)"),
        (lambda: Schedule(ratio=0.5, layers=(2,)).check(2), "must be in 0..1"),
    ]:
        with pytest.raises(ParameterError, match=message):
            make()


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not (0.0 <= x < 1.0)))
def test_any_ratio_outside_zero_one_is_a_parameter_error(ratio):
    with pytest.raises(ParameterError, match="ratio"):
        Schedule(ratio=ratio).check(6)


def mctf_reference(states, attention, sizes, r, taus=(1.0, 20.0, 40.0)) -> dict[int, int]:
    """MCTF's reference matching (the authors' ``utils/mctf.py``, ``one_step_ahead=0``, bidirectional, one
    protected [CLS]) written out for one row: each fused token's final destination."""
    n = states.shape[0]
    unit = states / states.norm(dim=-1, keepdim=True)
    w_sim = ((unit @ unit.T + 1) / 2) ** (1 / taus[0])
    info = 1 / attention.mean(dim=(0, 1))
    info = info / info.max()
    size = 1 / sizes
    size = size / size.max()
    scores = w_sim * (info[:, None] * info[None, :]) ** (1 / taus[1]) * (size[:, None] * size[None, :]) ** (1 / taus[2])
    a_set, b_set = list(range(0, n, 2)), list(range(1, n, 2))
    r1, r2 = r // 2, r - r // 2
    best = {a: max(b_set, key=lambda b: scores[a, b]) for a in a_set if a != 0}  # row 0: -inf (protected)
    ranked = sorted(best, key=lambda a: -scores[a, best[a]])
    moved = {a: best[a] for a in ranked[:r1]}
    stayed = [a for a in a_set if a not in moved]  # [CLS] among them: a -inf row, never chosen below
    best2 = {b: max((a for a in stayed if a != 0), key=lambda a: scores[a, b]) for b in b_set}
    ranked2 = sorted(best2, key=lambda b: -scores[best2[b], b])
    moved2 = {b: best2[b] for b in ranked2[:r2]}
    final = {a: moved2.get(b, b) for a, b in moved.items()}
    final.update(moved2)
    return final


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8))
def test_mctf_fuses_as_the_reference_code_does(seed, r):
    from tokensift.encoder.methods.base import LayerContext
    from tokensift.methods import resolve

    gen = torch.Generator().manual_seed(seed)
    batch, heads, n, dim = 1, 2, 17, 8
    states = torch.randn(batch, n, 12, generator=gen)
    queries = torch.randn(batch, heads, n, dim, generator=gen)
    keys = torch.randn(batch, heads, n, dim, generator=gen)
    sizes = torch.randint(1, 4, (batch, n), generator=gen).float()
    valid = torch.ones(batch, n, dtype=torch.bool)
    protected = torch.zeros(batch, n, dtype=torch.bool)
    protected[:, 0] = True
    ctx = LayerContext(
        layer=0, n_layers=1, states=states, before=states, valid=valid, protected=protected, sizes=sizes,
        remove=torch.tensor([r]), queries=queries, keys=keys, scaling=dim**-0.5, bias=torch.zeros(batch, 1, 1, n),
    )  # fmt: skip
    plan = resolve("encoder", "mctf").plan(ctx)
    fused = {i: int(t) for i, t in enumerate(plan.target[0]) if int(t) != i}
    attention = torch.softmax(queries @ keys.transpose(-1, -2) * dim**-0.5, dim=-1)[0]
    assert fused == mctf_reference(states[0], attention, sizes[0], r)


def gtp_reference(x, attention, graph, num_prop, alpha):
    """GTP-ViT as the authors' code runs it (Ackesnal/GTP-ViT ``models_v3.py``: ``select`` with MixedAttnMax
    and ``propagate`` with GraphProp, [CLS] first, no token scales), written out: x ``[N, C]``, attention
    ``[H, N, N]``, graph ``[N-1, N-1]`` over the patches. Returns {patch index: its token after propagation}."""
    own = torch.diagonal(attention, dim1=-2, dim2=-1)[:, 1:].max(0).values
    received = attention[:, :, 1:].sum(-2).max(0).values
    order = torch.argsort(own * received, descending=True)
    kept, going = order[:-num_prop], order[-num_prop:]
    patches = x[1:]
    out = patches[kept] + alpha * graph[kept][:, going] @ patches[going]
    return {int(i): row for i, row in zip(kept, out, strict=True)}


def grid_graph(side):
    """The reference's spatial graph: 8-neighbourhood on a ``side`` x ``side`` grid, ``D^-1/2 A D^-1/2``."""
    cells = torch.arange(side * side)
    r, c = cells // side, cells % side
    adjacency = (((r[:, None] - r[None]).abs() <= 1) & ((c[:, None] - c[None]).abs() <= 1)).float()
    adjacency -= torch.eye(side * side)
    scale = adjacency.sum(-1).rsqrt()
    return scale[:, None] * adjacency * scale[None]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 9), st.booleans())
def test_gtp_drops_and_propagates_as_the_reference_code_does(seed, num_prop, later):
    from tokensift.encoder.methods.base import LayerContext
    from tokensift.methods import resolve

    gen = torch.Generator().manual_seed(seed)
    side, heads, dim = 4, 3, 8
    graph = grid_graph(side)
    # the first reduction sees all 16 patches; a later one the 12 that survived an earlier step (positions kept)
    patches = torch.randperm(16, generator=gen)[:12].sort().values if later else torch.arange(16)
    n = len(patches) + 1
    states = torch.randn(1, n, 6, generator=gen)
    queries, keys = torch.randn(1, heads, n, dim, generator=gen), torch.randn(1, heads, n, dim, generator=gen)
    protected = torch.zeros(1, n, dtype=torch.bool)
    protected[:, 0] = True
    ctx = LayerContext(
        layer=0, n_layers=1, states=states, before=states, valid=torch.ones(1, n, dtype=torch.bool),
        protected=protected, sizes=torch.ones(1, n), remove=torch.tensor([num_prop]), queries=queries, keys=keys,
        scaling=dim**-0.5, bias=torch.zeros(1, 1, 1, n), positions=torch.cat([torch.tensor([-1]), patches])[None],
        reducible=torch.tensor([16]),
    )  # fmt: skip
    plan = resolve("encoder", "gtp").plan(ctx)
    assert plan.spread is not None
    propagated = (states + plan.spread @ states)[0]
    ours = {int(patches[i - 1]): propagated[i] for i in range(1, n) if int(plan.target[0, i]) == i}
    attention = torch.softmax(queries[0] @ keys[0].transpose(-1, -2) * dim**-0.5, dim=-1)
    expected = gtp_reference(states[0], attention, graph[patches][:, patches], num_prop, 0.1)
    assert sorted(ours) == sorted(int(patches[i]) for i in expected)
    for local, row in expected.items():
        torch.testing.assert_close(ours[int(patches[local])], row, rtol=1e-5, atol=1e-6)


def test_current_positions_follow_each_reducible_input_token():
    from tokensift.encoder.patch import current_positions

    index = torch.tensor([[-1, 0, 1, 2, 3, 4]])  # [CLS] + five patches
    origin = torch.tensor([[0, 1, -1, 2, 2, 3]])  # patch 1 dropped, patches 2 and 3 merged into slot 2
    assert current_positions(origin, index, 4).tolist() == [[-1, 0, 2, 4]]
