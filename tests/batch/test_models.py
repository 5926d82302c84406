"""Batch jobs and Ray Serve replicas on the embedded models (MiniLM, SmolLM2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.serve.helpers import free_port, running
from tests.serve.test_smollm2 import DOC, QUESTION

pytestmark = pytest.mark.model
SERVE_ARGS = ["--temperature", "0", "--store"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokensift", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def test_batch_embed_on_two_ray_actors_equals_one_process(tmp_path: Path) -> None:
    texts = [
        "The harbour town kept its old stone walls.",
        "",
        "Fishermen painted their boats in bright colours.",
        None,
        "word " * 300,
        "A small museum showed models of ships.",
    ] * 4
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"n": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    common = ["--text-field", "body", "--ratio", "0.3", "--shard-rows", "5", "--json"]
    ray = cli("batch", "embed", str(source), str(tmp_path / "ray.parquet"), "--actors", "2", *common)
    assert ray.returncode == 0, ray.stderr
    alone = cli(
        "batch", "embed", str(source), str(tmp_path / "off.parquet"), "--ray", "off", "--cpus-per-actor", "1", *common
    )
    assert alone.returncode == 0, alone.stderr
    report = json.loads(ray.stdout)
    assert (report["mode"], report["actors"], report["rows"], report["errors"]) == ("ray", 2, 24, 12)
    rows = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    assert rows == pq.read_table(tmp_path / "off.parquet").to_pylist()
    assert [r["error"] for r in rows[:6]] == [
        None,
        "'body' is empty",
        None,
        "'body' is null",
        "302 tokens, more than the 256 the encoder takes (--truncate cuts)",
        None,
    ]
    assert len(rows[0]["embedding"]) == 384 and rows[0]["kept_tokens"] < rows[0]["tokens"]


def test_kv_compress_writes_contexts_the_server_answers_from(tmp_path: Path) -> None:
    from tests.serve.helpers import call
    from tokensift.models import load_model
    from tokensift.serve.server import build

    source, store = tmp_path / "docs.jsonl", tmp_path / "store"
    source.write_text(json.dumps({"doc": "d1", "text": DOC}) + "\n" + json.dumps({"doc": "d2", "text": ""}) + "\n")
    args = ["batch", "kv-compress", str(source), str(tmp_path / "out.jsonl"), "--store", str(store), "--ray", "off"]
    done = cli(*args, "--method", "kvzip", "--ratio", "0.75", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[1]["error"] == "'text' is empty" and rows[1]["context_id"] is None
    first = rows[0]
    assert first["bytes_stored"] < 0.3 * first["bytes_full"]
    again = cli(*args, "--method", "kvzip", "--ratio", "0.75", "--restart")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["context_id"] == first["context_id"]
    server = build(load_model("smollm2-135m"), store=store, temperature=0.0)
    assert [c.id for c in server.engine.store.list()] == [first["context_id"]]
    with running(server.app) as url:
        body = {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 12,
            "temperature": 0,
        }
        status, answer = call(url + "/v1/chat/completions", {**body, "tokensift": {"context_id": first["context_id"]}})
    assert status == 200, answer
    assert "4721" in answer["choices"][0]["message"]["content"]


def request(url: str, body: Any = None, method: str | None = None) -> tuple[int, Any, str]:
    """(status, JSON body, replica header) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=300) as response:
            return response.status, json.loads(response.read()), response.headers.get("x-tokensift-replica", "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("x-tokensift-replica", "")


def health_status(url: str) -> int | None:
    """Status of GET /health; None while nothing listens. Ray's proxy answers a plain-text 404 until the
    application's routes are deployed, so the body is not read."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_two_ray_serve_replicas_share_one_context_store(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokensift",
            "serve",
            "--ray-replicas",
            "2",
            "--port",
            str(port),
            *SERVE_ARGS,
            str(tmp_path),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            if health_status(url) == 200:
                break
            assert time.monotonic() < deadline, "the replicas did not start"
            time.sleep(2)
        status, made, maker = request(url + "/v1/contexts", {"text": DOC, "kv": {"method": "snapkv", "ratio": 0.5}})
        assert status == 200, made
        ask = {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 12,
            "temperature": 0,
        }
        ask["tokensift"] = {"context_id": made["id"]}
        answers: dict[str, str] = {}
        for _ in range(40):  # until both replicas have answered from the shared context
            status, answer, replica = request(url + "/v1/chat/completions", ask)
            assert status == 200, answer
            answers[replica] = answer["choices"][0]["message"]["content"]
            if len(answers) == 2:
                break
        assert len(answers) == 2 and maker in answers
        assert len(set(answers.values())) == 1  # the other replica read the context from disk: the same answer
        assert request(url + f"/v1/contexts/{made['id']}", method="DELETE")[0] == 200
        gone: set[str] = set()
        for _ in range(40):  # deleted for every replica, including one holding it in memory
            status, _, replica = request(url + f"/v1/contexts/{made['id']}")
            assert status == 404
            gone.add(replica)
            if len(gone) == 2:
                break
        assert len(gone) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
