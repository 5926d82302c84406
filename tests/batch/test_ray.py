"""`run_batch` on a local Ray cluster (2 CPUs, started by the fixture): the same rows as one process, bad rows
kept, a worker killed mid-job costs nothing."""

import json
import os
import signal
import threading
import time

import psutil
import pyarrow.parquet as pq
import pytest
import torch

from tests.batch.helpers import SlowJob
from tests.batch.test_runner import EXPECTED_ERRORS, inspect_input
from tokensift.batch.jobs import InspectJob, ScoreDataJob
from tokensift.batch.runner import run_batch

pytest.importorskip("ray")


def off(job, source, output, **kwargs):
    """The single-process run with the actors' one thread (same threads: the same floats, bit for bit)."""
    threads = torch.get_num_threads()
    try:
        return run_batch(job, source, output, ray="off", cpus_per_actor=1, **kwargs)
    finally:
        torch.set_num_threads(threads)


def test_ray_gives_the_single_process_rows_row_for_row(tmp_path, model_dir, ray_cluster):
    source = inspect_input(tmp_path / "in.jsonl")
    job = InspectJob(model=str(model_dir), max_tokens=30, batch_size=2)
    on_ray = run_batch(job, source, tmp_path / "ray.parquet", ray="auto", actors=2, shard_rows=2)
    alone = off(job, source, tmp_path / "off.parquet", shard_rows=2)
    assert (on_ray.mode, on_ray.actors, on_ray.rows, on_ray.errors) == ("ray", 2, 11, 7)
    rows = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    assert rows == pq.read_table(tmp_path / "off.parquet").to_pylist()
    assert [r["error"] for r in rows] == EXPECTED_ERRORS
    assert alone.rows == 11


def test_score_data_on_ray_matches_one_process(tmp_path, model_dir, ray_cluster):
    rows = [{"prompt": "the cat sat", "response": "on the mat ."}, {"question": "one ?", "answer": "two"}] * 5
    rows[3] = {"prompt": "the dog"}
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = ScoreDataJob(model=str(model_dir), batch_size=3)
    run_batch(job, source, tmp_path / "ray.jsonl", ray="auto", actors=2, shard_rows=3)
    off(job, source, tmp_path / "off.jsonl", shard_rows=3)
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "off.jsonl").read_text()
    found = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert found[3]["error"].startswith("no known fields (keys: prompt)")
    assert sum(r["error"] is None for r in found) == 9


def _kill_a_worker_mid_shard(marks, killed):
    """Wait until some worker has started its third batch, then SIGKILL that worker process."""
    deadline = time.time() + 120
    while time.time() < deadline:
        started = sorted(marks.glob("started-*"), key=lambda p: p.stat().st_mtime)
        if len(started) >= 3:
            pid = int(started[-1].name.split("-")[1])
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, started[-1].name.split("-", 2)[2]))
                return
        time.sleep(0.05)


def test_a_worker_killed_mid_job_loses_and_duplicates_no_row(tmp_path, ray_cluster):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"i": i, "text": f"row {i:03d}"}) + "\n" for i in range(24)))
    marks = tmp_path / "marks"
    marks.mkdir()
    killed: list[tuple[int, str]] = []
    watcher = threading.Thread(target=_kill_a_worker_mid_shard, args=(marks, killed))
    watcher.start()
    job = SlowJob(delay=0.25, batch_size=4, marks=str(marks))
    report = run_batch(job, source, tmp_path / "out.parquet", ray="auto", actors=2, shard_rows=4)
    watcher.join()
    assert killed, "no worker was killed"
    pid, text = killed[0]
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["i"] for r in rows] == list(range(24))
    assert [r["length"] for r in rows] == [7] * 24 and all(r["error"] is None for r in rows)
    redone = next(r for r in rows if r["text"] == text)
    assert redone["pid"] != pid  # the killed worker's shard was done again, by another process
    assert report.rows == 24 and report.workers >= 2
