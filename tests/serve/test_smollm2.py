"""The server on SmolLM2-135M: answers on a cached kvzip context equal ``tokensift kv generate``; eight
concurrent clients get exactly what each request gets alone (and are decoded together); a server killed
mid-run restarts with its context store intact."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from tests.serve.helpers import call, free_port, running, start_cli
from tokensift.serve.load import ask, load_test
from tokensift.serve.server import build

pytestmark = pytest.mark.model

DOC = (
    "The harbour town kept its old stone walls long after the fort was gone. "
    "Every spring the fishermen painted their boats in bright colours before the first trip of the season. "
    "The baker on the main square sold rye bread and honey cakes, and children queued for them after school. "
    "In the summer, visitors came by ferry from the mainland to walk along the cliffs and watch the seals. "
    "The special magic number is 4721. "
    "In autumn the town held a market where farmers sold apples, cheese and wool. "
    "Winters were long and dark, and most families gathered in the old church hall to sing and tell stories. "
    "The school had only two classrooms, one for the younger children and one for the older ones. "
    "A small museum near the harbour showed models of ships, old maps and a diving helmet found on the seabed. "
)
QUESTION = "What is the special magic number?"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _quietly(url: str, body: dict) -> None:
    with contextlib.suppress(OSError):  # the server is killed under this request
        call(url, body)


def _chat(question: str, context_id: str | None = None, max_tokens: int = 12) -> dict:
    body: dict = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0}
    if context_id:
        body["tokensift"] = {"context_id": context_id}
    return body


def test_cached_context_answers_like_kv_generate_and_survive_a_kill(tmp_path: Path) -> None:
    store, port = tmp_path / "store", free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_cli(store, port, "--temperature", "0")
    try:
        status, made = call(url + "/v1/contexts", {"text": DOC, "kv": {"method": "kvzip", "ratio": 0.75}})
        assert status == 200, made
        assert made["bytes_stored"] / made["bytes_full"] == pytest.approx(0.25, abs=0.01)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        first, *_ = ask(client, "smollm2-135m", _chat(QUESTION, made["id"], 24))
        assert "4721" in first
        # a long request is decoding when the server is killed
        busy = {"model": "smollm2-135m", **_chat("Write a long story.", max_tokens=200)}
        threading.Thread(target=_quietly, args=(url + "/v1/chat/completions", busy), daemon=True).start()
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    context_file = tmp_path / "doc.txt"
    context_file.write_text(DOC)
    generated = subprocess.run(
        [sys.executable, "-m", "tokensift", "kv", "generate", "--context", str(context_file), "-q", QUESTION,
         "--method", "kvzip", "--ratio", "0.75", "--max-new-tokens", "24", "--json"],
        env=ENV, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert first.strip() == json.loads(generated.stdout)["answer"]
    process = start_cli(store, port, "--temperature", "0")
    try:
        status, info = call(url + f"/v1/contexts/{made['id']}")
        assert status == 200 and info["bytes_stored"] == made["bytes_stored"]
        again, *_ = ask(openai.OpenAI(base_url=url + "/v1", api_key="none"), "smollm2-135m",
                        _chat(QUESTION, made["id"], 24))  # fmt: skip
        assert again == first
        _, metrics = call(url + "/metrics")
        assert "tokensift_context_loads_total 1" in metrics
    finally:
        process.kill()


def test_eight_concurrent_clients_get_what_each_gets_alone(tmp_path: Path) -> None:
    from tokensift.models import load_model

    server = build(load_model("smollm2-135m"), store=tmp_path, temperature=0.0)
    with running(server.app) as url:
        status, made = call(url + "/v1/contexts", {"text": DOC, "kv": {"method": "snapkv", "ratio": 0.75}})
        assert status == 200, made
        requests = {
            "code": _chat(QUESTION, made["id"]),
            "bread": _chat("What did the baker sell?", made["id"]),
            "boats": _chat("What did the fishermen paint?", made["id"]),
            "market": _chat("What did farmers sell at the market?", made["id"]),
            "paris": _chat("What is the capital of France?"),
            "count": _chat("Count from one to ten."),
            "sky": _chat("Why is the sky blue?"),
            "poem": _chat("Write a short poem about the sea."),
        }
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        alone = {key: ask(client, "smollm2-135m", body)[0] for key, body in requests.items()}
        steps = server.engine.metrics.value("tokensift_decode_steps_total")
        rows = server.engine.metrics.value("tokensift_decode_rows_total")
        report = load_test(url, "smollm2-135m", requests, clients=8, seconds=0.0, expected=alone)
        assert report.requests == 8 and report.errors == 0 and report.unchecked == 0
        assert report.mismatches == 0, [(o.key, o.answer, alone[o.key]) for o in report.outcomes]
        assert {o.key for o in report.outcomes} == set(requests)
        steps = server.engine.metrics.value("tokensift_decode_steps_total") - steps
        rows = server.engine.metrics.value("tokensift_decode_rows_total") - rows
        assert rows / steps > 2, "the concurrent requests were not decoded together"
        # a bounded load test, full cache against compressed: 4 clients for 5 s each, every answer checked
        status, full = call(url + "/v1/contexts", {"text": DOC})
        assert status == 200 and full["bytes_stored"] == full["bytes_full"] > made["bytes_stored"]
        for label, context in (("compressed", made), ("full", full)):
            asked = (("code", QUESTION), ("bread", "What did the baker sell?"))
            load = {f"{label}-{key}": _chat(q, context["id"]) for key, q in asked}
            expected = {key: ask(client, "smollm2-135m", body)[0] for key, body in load.items()}
            bounded = load_test(url, "smollm2-135m", load, clients=4, seconds=5.0, expected=expected)
            assert bounded.errors == 0 and bounded.mismatches == 0 and bounded.requests >= 4
            print(label, SimpleNamespace(**bounded.summary()))
