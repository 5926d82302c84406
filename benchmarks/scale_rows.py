"""Write N instruction rows for the 100k-row `batch score-data` job: NQ-Open question/answer pairs in turn
(the data folder's lost_in_the_middle/nq-open-oracle.jsonl.gz), with one bad row in every 1,000 (a blank
line, a null answer, a line that is not JSON, a question of 3,000 tokens) that must come back as rows with an
error. Usage: python benchmarks/scale_rows.py DATA_DIR OUT.jsonl [N]"""

import gzip
import json
import sys
from pathlib import Path


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    with gzip.open(data / "lost_in_the_middle" / "nq-open-oracle.jsonl.gz", "rt", encoding="utf-8") as handle:
        pairs = [(row["question"], row["answers"][0]) for row in map(json.loads, handle)]
    bad = [
        lambda i: "",
        lambda i: json.dumps({"id": i, "question": pairs[i % len(pairs)][0], "answer": None}),
        lambda i: "{not json",
        lambda i: json.dumps({"id": i, "question": "x " * 3000, "answer": "y"}),
    ]
    with out.open("w", encoding="utf-8") as target:
        for i in range(n):
            if i % 1000 == 999:
                target.write(bad[(i // 1000) % 4](i) + "\n")
            else:
                question, answer = pairs[i % len(pairs)]
                target.write(json.dumps({"id": i, "question": question, "answer": answer}) + "\n")


if __name__ == "__main__":
    main()
