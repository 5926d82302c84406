"""Train the LLaVA's two-layer projector on easy-VQA's training questions, both towers frozen.

    python benchmarks/train_projector.py [--steps 300] [--images-per-step 8] [--questions-per-image 5]

DINOv2-small's last-layer patch tokens (224 px: 256 tokens, [CLS] dropped; ``--image-size``) are computed once
per image and kept in ``--features`` (not committed). Each step takes ``--images-per-step`` training images and
``--questions-per-image`` of their questions: SmolLM2 runs the shared part of the prompt (chat prefix + image
tokens) once per image, then every question of that image continues from a copy of that cache (about 3x fewer
tokens than one row per question).
The loss is the cross-entropy of the answer tokens and the closing ``<|im_end|>``. ``--keep-mix`` drops visual
tokens at random during training (one share per step), so the frozen language model learns to read any number of
them. The projector's weights go
to ``src/tokensift/models/data`` (2.2 MB), the training log (loss, held-out accuracy, seconds) beside them.
The shipped weights: three runs at 112 px (the log's first three), then, started from them,
``--image-size 224 --steps 100 --lr 1e-3 --keep-mix 1,1,0.5,0.25,0.11,0.05`` (about 16 min on 2 threads).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from safetensors.torch import save_file
from torch import Tensor

from tokensift.models import _resolve
from tokensift.models.vision import PROJECTOR, VLM_IMAGE_SIZE, assemble_llava, image_processor
from tokensift.vision import data
from tokensift.vision.prompt import END, PREFIX, SUFFIX


def image_features(
    vision: torch.nn.Module, split: str, cache: Path, size: int = VLM_IMAGE_SIZE, batch: int = 64
) -> Tensor:
    """``[images, (size // 14) ** 2, 384]`` DINOv2 last-layer patch tokens of every image of ``split`` (cached on
    disk)."""
    from PIL import Image

    path = cache / f"easyvqa-{split}-{size}px.pt"
    if path.is_file():
        return torch.load(path)
    processor = image_processor(size)
    files = list(data.images(split).values())
    out = []
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        pixels = processor([Image.open(f) for f in files[i : i + batch]], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        out.append(hidden)
        print(
            f"features {split}: {i + len(pixels)}/{len(files)} ({time.perf_counter() - start:.0f} s)", file=sys.stderr
        )
    features = torch.cat(out)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(features, path)
    return features


def encode(tokenizer, questions: list[data.Question], with_answer: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded suffix ids ``[Q, S]``, the index of the first answer token's prediction ``[Q]`` and the
    answer labels ``[Q, S]`` (-100 elsewhere)."""
    rows, starts, labels = [], [], []
    for q in questions:
        ask = tokenizer(SUFFIX.format(question=q.text), add_special_tokens=False).input_ids
        answer = tokenizer(q.answer + END, add_special_tokens=False).input_ids if with_answer else []
        rows.append(ask + answer)
        starts.append(len(ask) - 1)
        labels.append([-100] * len(ask) + answer)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([(lab + [-100] * (width - len(lab)))[:width] for lab in labels])
    return ids, torch.tensor(starts), lab


def run(model, features: Tensor, owners: Tensor, suffix: Tensor) -> Tensor:
    """Hidden states ``[Q, S, D]`` of each question's suffix, after its image's shared prefix."""
    from transformers import DynamicCache

    lm = model.model.language_model
    embed = lm.get_input_embeddings()
    tokenizer_prefix = run.prefix_ids  # type: ignore[attr-defined]
    images = model.model.multi_modal_projector(features)
    prefix = torch.cat([embed(tokenizer_prefix).expand(len(images), -1, -1), images], dim=1)
    shared = lm(inputs_embeds=prefix, use_cache=True).past_key_values
    cache = DynamicCache()
    for i, layer in enumerate(shared.layers):
        cache.update(layer.keys[owners], layer.values[owners], i)
    length = prefix.shape[1]
    positions = torch.arange(length, length + suffix.shape[1])[None].expand(len(suffix), -1)
    return lm(inputs_embeds=embed(suffix), past_key_values=cache, position_ids=positions).last_hidden_state


def accuracy(model, tokenizer, features: Tensor, questions: list[data.Question], batch: int = 16) -> float:
    """Share of questions whose greedy first answer token is the gold answer's (the 13 answers' first tokens
    differ, so this is the greedy answer's accuracy)."""
    first = {a: tokenizer(a, add_special_tokens=False).input_ids[0] for a in data.answers()}
    right = 0
    by_image: dict[int, list[data.Question]] = {}
    for q in questions:
        by_image.setdefault(q.image_id, []).append(q)
    ids = sorted(by_image)
    with torch.no_grad():
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            qs = [q for image in chunk for q in by_image[image]]
            owners = torch.tensor([k for k, image in enumerate(chunk) for _ in by_image[image]])
            suffix, starts, _ = encode(tokenizer, qs, with_answer=False)
            hidden = run(model, features[torch.tensor(chunk)], owners, suffix)
            logits = model.lm_head(hidden[torch.arange(len(qs)), starts])
            right += sum(int(p == first[q.answer]) for p, q in zip(logits.argmax(-1).tolist(), qs, strict=True))
    return right / len(questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images-per-step", type=int, default=8)
    parser.add_argument("--questions-per-image", type=int, default=5, help="questions sampled per image and step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--keep-mix",
        default="1",
        help="visual-token dropout: each step keeps this share of each image's tokens, a random subset in grid order "
        "(one share per step, drawn from the list; 1 = no dropout)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-images", type=int, default=50, help="held-out test images for the running accuracy")
    parser.add_argument(
        "--image-size", type=int, default=VLM_IMAGE_SIZE, help="input side in px ((size // 14) ** 2 visual tokens)"
    )
    parser.add_argument("--init", type=Path, default=None, help="start from these projector weights (continue a run)")
    parser.add_argument("--features", type=Path, default=Path.home() / ".cache" / "tokensift" / "features")
    parser.add_argument("--out", type=Path, default=PROJECTOR)
    parser.add_argument("--log", type=Path, default=PROJECTOR.with_suffix(".log.jsonl"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    vision_folder = _resolve("dinov2-small", None)[0]
    text_folder = _resolve("smollm2-135m", None)[0]
    model, processor = assemble_llava(vision_folder, text_folder, None)
    tokenizer = processor.tokenizer
    run.prefix_ids = torch.tensor([tokenizer(PREFIX, add_special_tokens=False).input_ids])  # type: ignore[attr-defined]
    for p in model.parameters():
        p.requires_grad_(False)
    projector = model.model.multi_modal_projector
    if args.init is not None:
        from safetensors.torch import load_file

        projector.load_state_dict(load_file(str(args.init)))
    for p in projector.parameters():
        p.requires_grad_(True)

    train_features = image_features(model.model.vision_tower, "train", args.features, args.image_size)
    test_features = image_features(model.model.vision_tower, "test", args.features, args.image_size)
    train_ids = sorted(data.images("train"))
    by_image: dict[int, list[data.Question]] = {}
    for q in data.questions("train"):
        by_image.setdefault(q.image_id, []).append(q)
    eval_ids = set(sorted(data.images("test"))[: args.eval_images])
    held_out = [q for q in data.questions("test") if q.image_id in eval_ids]

    mix = [float(x) for x in args.keep_mix.split(",")]
    optimizer = torch.optim.AdamW(projector.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)

    def schedule(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    log = args.log.open("a" if args.init is not None else "w")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out", "log")}
    print(json.dumps({"run": settings, "torch_threads": torch.get_num_threads()}), file=log, flush=True)
    start = time.perf_counter()
    order: list[int] = []
    for step in range(args.steps):
        if len(order) < args.images_per_step:
            order = train_ids[:]
            rng.shuffle(order)
        chunk = [order.pop() for _ in range(args.images_per_step)]
        picked = [rng.sample(by_image[image], min(args.questions_per_image, len(by_image[image]))) for image in chunk]
        qs = [q for group in picked for q in group]
        owners = torch.tensor([k for k, group in enumerate(picked) for _ in group])
        suffix, _, labels = encode(tokenizer, qs, with_answer=True)
        features = train_features[torch.tensor(chunk)]
        share = rng.choice(mix)
        if share < 1:
            k = max(1, round(share * features.shape[1]))
            subset = torch.stack([torch.randperm(features.shape[1])[:k].sort().values for _ in chunk])
            features = features.gather(1, subset[..., None].expand(-1, -1, features.shape[-1]))
        hidden = run(model, features, owners, suffix)
        where = labels[:, 1:] != -100
        logits = model.lm_head(hidden[:, :-1][where])
        loss = torch.nn.functional.cross_entropy(logits, labels[:, 1:][where])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        entry = {"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - start, 1)}
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            entry["held_out_accuracy"] = round(accuracy(model, tokenizer, test_features, held_out), 4)
            if mix != [1.0]:  # the same questions with a random quarter of the visual tokens
                tokens = test_features.shape[1]
                quarter = torch.stack(
                    [
                        torch.randperm(tokens, generator=torch.Generator().manual_seed(i))[: tokens // 4].sort().values
                        for i in range(test_features.shape[0])
                    ]
                )
                kept = test_features.gather(1, quarter[..., None].expand(-1, -1, test_features.shape[-1]))
                entry["held_out_accuracy_random_quarter"] = round(accuracy(model, tokenizer, kept, held_out), 4)
            entry["held_out_questions"] = len(held_out)
            save_file({k: v.detach().contiguous() for k, v in projector.state_dict().items()}, str(args.out))
        print(json.dumps(entry), file=log, flush=True)
        print(json.dumps(entry), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
