"""Train the KVzap surrogate: ridge regression from each layer's input hidden states to ``kvzip``'s log scores.

Run: ``python -m tokensift.kv.kvzap_train --data ../shared/data`` (writes the file ``kvzap`` loads by default).

Each essay of the data folder, as one chat user turn, gives one context of ``--tokens`` tokens. For each, the
model prefills it (the attention layers' input hidden states are recorded through forward pre-hooks) and
``kvzip``'s repeat pass scores every KV pair (:func:`tokensift.kv.probe.reconstruction_probes`). Per layer the
targets are ``log(max(score, 1e-6))`` per KV head and the fit is closed form: ``(XᵀX + λI)⁻¹ XᵀY`` over the
training essays' tokens, with a bias. The last ``--holdout`` essays are kept out and judged: per layer the
correlation of predicted and true log scores, and, at 12.5 % and 25 % kept, how much of kvzip's model-wide
selection kvzap's selection keeps (recall; random would keep the kept fraction).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

EPS = 1e-6
KEEPS = (0.125, 0.25)


def contexts(tokenizer: Any, essays: list[str], tokens: int) -> list[list[int]]:
    """The first ``tokens`` tokens of each essay as one chat user turn (shorter essays are skipped)."""
    found = []
    for text in essays:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        ids = tokenizer(rendered, add_special_tokens=False).input_ids
        if len(ids) >= tokens:
            found.append(list(ids[:tokens]))
    return found


@torch.no_grad()
def observe(model: torch.nn.Module, tokenizer: Any, ids: list[int]) -> tuple[list[Tensor], list[Tensor]]:
    """One context: per layer its input hidden states ``[T, d]`` and kvzip's scores ``[Hkv, T]``."""
    from tokensift.kv.bench import prefill
    from tokensift.kv.methods.kvzip import KVzip
    from tokensift.kv.probe import reconstruction_probes

    pre = prefill(model, ids, hidden=True)
    order = sorted(pre.views)
    keys = {layer: pre.views[layer].keys for layer in order}
    values = {layer: pre.views[layer].values for layer in order}
    scores = reconstruction_probes(model, keys, values, KVzip(ratio=0.5, tokenizer=tokenizer).probe_inputs(ids))
    hidden = [pre.views[layer].hidden for layer in order]
    if any(h is None for h in hidden):
        raise RuntimeError("the prefill did not keep the layers' hidden states")
    return [h[0] for h in hidden if h is not None], [torch.stack(scores[layer]).amax(0) for layer in order]


def fit(gram: list[Tensor], cross: list[Tensor], ridge: float) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer the ridge solution of the accumulated ``[X 1]ᵀ[X 1]`` and ``[X 1]ᵀY`` (the bias not shrunk)."""
    weights, biases = [], []
    for g, c in zip(gram, cross, strict=True):
        penalty = torch.full((g.shape[0],), ridge, dtype=g.dtype)
        penalty[-1] = 0.0
        solution = torch.linalg.solve(g + torch.diag(penalty), c)  # [d + 1, Hkv]
        weights.append(solution[:-1].T.float())
        biases.append(solution[-1].float())
    return weights, biases


def recall(true: list[Tensor], predicted: list[Tensor], keep: float, protect_first: int = 4) -> float:
    """Share of kvzip's model-wide selection at ``keep`` that the predicted scores' selection also keeps."""
    from tokensift.select import global_indices

    n = true[0].shape[-1]
    k = max(1, round(keep * n))
    picked = [global_indices(s, k, protect_first=protect_first) for s in (true, predicted)]
    both = total = 0
    for layer_true, layer_pred in zip(*picked, strict=True):
        for head_true, head_pred in zip(layer_true, layer_pred, strict=True):
            both += len(set(head_true.tolist()) & set(head_pred.tolist()))
            total += len(head_true)
    return both / total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per essay context")
    parser.add_argument("--essays", type=int, default=0, help="use the first N essays (0: all)")
    parser.add_argument("--holdout", type=int, default=8, help="last essays kept out of the fit and judged")
    parser.add_argument("--ridge", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="surrogate file (default: the bundled one)")
    args = parser.parse_args(argv)
    from tokensift.bench import data as files
    from tokensift.kv.methods.kvzap import BUNDLED, save_surrogate
    from tokensift.models import load_model

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tokenizer = load_model(args.model)
    essays = files.essays(args.data)
    found = contexts(tokenizer, essays[: args.essays] if args.essays else essays, args.tokens)
    if len(found) <= args.holdout:
        raise SystemExit(f"{len(found)} essays of {args.tokens}+ tokens; --holdout {args.holdout} leaves none to fit")
    train, held = found[: -args.holdout], found[-args.holdout :]
    gram: list[Tensor] = []
    cross: list[Tensor] = []
    for number, ids in enumerate(train, start=1):
        hidden, scores = observe(model, tokenizer, ids)
        for layer, (h, s) in enumerate(zip(hidden, scores, strict=True)):
            x = torch.cat([h.double(), torch.ones(h.shape[0], 1, dtype=torch.float64)], 1)
            y = s.double().clamp_min(EPS).log().T  # [T, Hkv]
            if len(gram) <= layer:
                gram.append(torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64))
                cross.append(torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64))
            gram[layer] += x.T @ x
            cross[layer] += x.T @ y
        print(f"essay {number}/{len(train)} observed ({time.perf_counter() - started:.0f} s)", flush=True)
    weights, biases = fit(gram, cross, args.ridge)
    correlations: list[list[float]] = [[] for _ in weights]
    recalls: dict[float, list[float]] = {keep: [] for keep in KEEPS}
    for ids in held:
        hidden, scores = observe(model, tokenizer, ids)
        predicted = [(h @ w.T + b).T for h, w, b in zip(hidden, weights, biases, strict=True)]
        for layer, (p, s) in enumerate(zip(predicted, scores, strict=True)):
            true = s.clamp_min(EPS).log().flatten()
            correlations[layer].append(float(torch.corrcoef(torch.stack([p.flatten(), true]))[0, 1]))
        for keep in KEEPS:
            recalls[keep].append(recall(scores, predicted, keep))
    per_layer = [sum(c) / len(c) for c in correlations]
    meta = {
        "model": args.model,
        "layers": len(weights),
        "hidden": int(weights[0].shape[1]),
        "kv_heads": int(weights[0].shape[0]),
        "target": "log(max(kvzip score, 1e-6)), kvzip's repeat pass, chat-formatted essay contexts",
        "contexts": {"train": len(train), "held_out": len(held), "tokens": args.tokens},
        "ridge": args.ridge,
        "held_out_correlation_per_layer": [round(c, 4) for c in per_layer],
        "held_out_correlation_mean": round(sum(per_layer) / len(per_layer), 4),
        "held_out_recall_of_kvzip_selection": {f"{k:g}": round(sum(v) / len(v), 4) for k, v in recalls.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python -m tokensift.kv.kvzap_train "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "data")),
    }
    out = args.out or BUNDLED
    save_surrogate(out, weights, biases, meta)
    print(json.dumps(meta, indent=1))
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    if not all(math.isfinite(c) for c in per_layer):
        raise SystemExit("a layer's held-out correlation is not finite")


if __name__ == "__main__":
    main()
