"""How long does `load_model` take once the cache is built? Run: .venv/bin/python benchmarks/load_time.py

Each repetition starts a fresh interpreter, imports tokensift/torch/transformers (not timed), then
times `load_model(name)` alone. The first call builds the cache if it is missing (reported apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
start = time.perf_counter()
# imports are not part of the figure; transformers imports most of its modules lazily, on first use
import torch, transformers, transformers.modeling_utils, transformers.models.auto.modeling_auto
import transformers.tokenization_utils_tokenizers
from tokensift.models import load_model
imported = time.perf_counter()
loaded = load_model({name!r})
print(json.dumps({{"seconds": time.perf_counter() - imported, "imports": imported - start}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = []
    for i in range(args.repeats + 1):
        result = subprocess.run(
            [sys.executable, "-c", CHILD.format(name=args.model)], capture_output=True, text=True, check=True
        )
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        seconds = figures["seconds"]
        label = "first (builds the cache if missing)" if i == 0 else f"repeat {i}"
        print(f"{args.model} load_model, {label}: {seconds:.2f} s (imports before it: {figures['imports']:.2f} s)")
        if i:
            times.append(seconds)
    print(
        f"{args.model}: median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} "
        "fresh processes (imports excluded)"
    )


if __name__ == "__main__":
    main()
