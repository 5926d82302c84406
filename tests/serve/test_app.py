"""The server's HTTP surface on a tiny random model, over a real loopback socket: OpenAI shapes, the
official client, the extension field, errors with their statuses, metrics, contexts, cancellation."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest
import torch

from tests.conftest import tiny_llama, word_level_tokenizer
from tests.serve.helpers import call, running
from tokensift.kv.api import press_from
from tokensift.kv.qa import answer, compress_context
from tokensift.serve.server import build

TEXT = "the cat sat on the mat and the dog ran to the house . the red cat sat on a big mat"


def _loaded(context: int = 128) -> SimpleNamespace:
    return SimpleNamespace(
        model=tiny_llama(context=context), tokenizer=word_level_tokenizer(), name="tiny", spec=None, path=Path(".")
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    built = build(_loaded(), store=tmp_path_factory.mktemp("store"), max_tokens=8, temperature=0.0)
    with running(built.app) as url:
        yield SimpleNamespace(url=url, built=built)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def test_chat_with_the_openai_client_streaming_and_not(server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    messages = [{"role": "user", "content": TEXT}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 6
    assert whole.usage.prompt_tokens == len(_ids(server.built.loaded.tokenizer, TEXT + "\n"))
    pieces = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0, stream=True)
    chunks = list(pieces)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == whole.choices[0].message.content and streamed.strip()
    # the same greedy tokens as decoding the prompt alone, outside the server
    loaded = server.built.loaded
    ids = torch.tensor([_ids(loaded.tokenizer, TEXT + "\n")])
    alone = answer(loaded.model, compress_context(loaded.model, ids[:, :-1], press_from("snapkv", ratio=0.0)),
                   ids[:, -1:], max_new_tokens=6)  # fmt: skip
    assert streamed == loaded.tokenizer.decode(alone.ids[0], skip_special_tokens=True)


def test_completions_and_stop_strings(server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    first = client.completions.create(model="tiny", prompt=TEXT, max_tokens=8, temperature=0)
    text = first.choices[0].text
    words = text.split()
    assert first.object == "text_completion" and len(words) >= 3
    stop = " " + words[2]
    cut = client.completions.create(model="tiny", prompt=TEXT, max_tokens=8, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.find(stop)]
    streamed = client.completions.create(
        model="tiny", prompt=TEXT, max_tokens=8, temperature=0, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_kv_compression_through_the_extension_field(server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    content = TEXT + "\n\nthe cat ?"
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": content}],
        max_tokens=4,
        temperature=0,
        extra_body={"tokensift": {"kv": {"method": "snapkv", "ratio": 0.5}}},
    )
    stats = reply.model_extra["tokensift"]
    assert stats["kv"] == {"method": "snapkv", "ratio": 0.5}
    assert 0.45 <= stats["kept_fraction"] <= 0.55 and stats["cache_bytes_after"] < stats["cache_bytes_before"]
    # what it decoded equals compressing the document alone, question kept out
    loaded = server.built.loaded
    head, tail = _ids(loaded.tokenizer, TEXT), _ids(loaded.tokenizer, "\n\nthe cat ?\n")
    context = compress_context(loaded.model, torch.tensor([head]), press_from("snapkv", ratio=0.5))
    alone = answer(loaded.model, context, torch.tensor([tail]), max_new_tokens=4)
    assert reply.choices[0].message.content == loaded.tokenizer.decode(alone.ids[0], skip_special_tokens=True)


def test_contexts_are_created_listed_used_and_deleted(server) -> None:
    status, made = call(server.url + "/v1/contexts", {"text": TEXT, "kv": {"method": "knorm", "keep": 0.5}})
    assert status == 200, made
    assert made["tokens"] == len(_ids(server.built.loaded.tokenizer, TEXT))
    assert made["bytes_stored"] * 2 == pytest.approx(made["bytes_full"], rel=0.1)
    status, listed = call(server.url + "/v1/contexts")
    assert made["id"] in [c["id"] for c in listed["data"]]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "the cat ?"}], "max_tokens": 4,
            "temperature": 0, "tokensift": {"context_id": made["id"]}}  # fmt: skip
    status, reply = call(server.url + "/v1/chat/completions", body)
    assert status == 200 and reply["tokensift"]["context_id"] == made["id"]
    loaded = server.built.loaded
    context = compress_context(
        loaded.model, torch.tensor([_ids(loaded.tokenizer, TEXT)]), press_from("knorm", keep=0.5)
    )
    alone = answer(loaded.model, context, torch.tensor([_ids(loaded.tokenizer, "\n\nthe cat ?\n")]), max_new_tokens=4)
    assert reply["choices"][0]["message"]["content"] == loaded.tokenizer.decode(alone.ids[0], skip_special_tokens=True)
    assert call(server.url + f"/v1/contexts/{made['id']}", method="DELETE")[0] == 200
    assert call(server.url + f"/v1/contexts/{made['id']}")[0] == 404
    assert call(server.url + "/v1/chat/completions", body)[0] == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}],
                              "tokensift": {"kv": {"method": "nosuch"}}}, 400, "nosuch"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a\n\nb"}],
                              "tokensift": {"kv": {"method": "snapkv", "ratio": 1.5}}}, 400, "ratio"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}], "n": 2}, 400, "n must"),
        ("chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "a"}]}, 404, "gpt-4"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}],
                              "tokensift": {"context_id": "ctx-none"}}, 404, "ctx-none"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "cat " * 200}]}, 413,
         "positions"),
        ("contexts", {"text": "cat " * 200}, 413, "positions"),
        ("chat/completions", {"model": "tiny", "messages": "hello"}, 422, "messages"),
        ("chat/completions", {"messages": [{"role": "user", "content": "a"}]}, 422, "model"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}],
                              "temperature": -1}, 422, "temperature"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}],
                              "tokensift": {"kv": {"method": "snapkv", "path": "/etc/passwd"}}}, 422, "path"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a\n\nb"}],
                              "tokensift": {"kv": {"method": "kvzip", "options": {"tokenizer": "/x"}}}}, 400,
         "tokenizer"),
        ("contexts", {"text": "a", "messages": [{"role": "user", "content": "a"}]}, 400, "either"),
        ("contexts", {"text": "  "}, 400, "empty"),
        ("completions", {"model": "tiny", "prompt": ""}, 400, "empty"),
        ("completions", {"model": "tiny", "prompt": "a", "logprobs": 2}, 400, "logprobs"),
        ("chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}], "logprobs": True}, 400,
         "logprobs"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors(server, path: str, body: dict, status: int, words: str) -> None:
    got, reply = call(f"{server.url}/v1/{path}", body)
    assert got == status, reply
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert words in reply["error"]["message"]
    assert "Traceback" not in reply["error"]["message"]


def test_unparsable_body_and_unknown_routes(server) -> None:
    got, reply = call(server.url + "/v1/chat/completions", raw=b"{not json")
    assert got == 422 and reply["error"]["code"] == "malformed"
    got, reply = call(server.url + "/v1/nothing")
    assert got == 404 and "error" in reply


def test_a_full_queue_answers_429(server) -> None:
    engine = server.built.engine
    engine.max_queue = 0
    try:
        got, reply = call(server.url + "/v1/completions", {"model": "tiny", "prompt": "the cat", "max_tokens": 2})
    finally:
        engine.max_queue = 32
    assert got == 429 and reply["error"]["type"] == "rate_limit_error"


def test_models_health_and_metrics(server) -> None:
    assert call(server.url + "/v1/models")[1]["data"][0]["id"] == "tiny"
    assert call(server.url + "/v1/models/tiny")[0] == 200
    assert call(server.url + "/v1/models/other")[0] == 404
    assert call(server.url + "/health")[1]["status"] == "ok"
    call(server.url + "/v1/completions", {"model": "tiny", "prompt": "the cat", "max_tokens": 3, "temperature": 0})
    _, text = call(server.url + "/metrics")
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(lines['tokensift_requests_total{endpoint="/v1/completions",status="200"}']) >= 1
    assert float(lines["tokensift_generated_tokens_total"]) >= 3
    assert float(lines["tokensift_context_cache_limit_bytes"]) == 2**30
    assert float(lines['tokensift_time_to_first_token_seconds_bucket{le="+Inf"}']) >= 1
    assert "tokensift_queue_depth" in lines


def test_a_client_that_goes_away_frees_its_slot(tmp_path: Path) -> None:
    built = build(_loaded(context=8192), store=tmp_path, max_tokens=8000, temperature=0.0)
    engine = built.engine
    body = json.dumps({"model": "tiny", "prompt": "the cat", "stream": True}).encode()
    with running(built.app) as url:
        request = urllib.request.Request(url + "/v1/completions", data=body, method="POST")
        request.add_header("content-type", "application/json")
        response = urllib.request.urlopen(request, timeout=60)
        response.readline()  # the first event arrived: the request is decoding (8000 tokens to go)
        assert engine.depth == (0, 1)
        response.close()
        deadline = time.monotonic() + 20
        while engine.depth != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.depth == (0, 0)
        assert engine.metrics.value("tokensift_cancelled_total") == 1
        assert engine.metrics.value("tokensift_generated_tokens_total") < 8000


def test_a_damaged_context_answers_410_and_is_not_served(server) -> None:
    status, made = call(server.url + "/v1/contexts", {"text": TEXT})
    assert status == 200
    store = server.built.engine.store
    path = store.folder / f"{made['id']}.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    store.memory.pop(made["id"])
    body = {"model": "tiny", "prompt": "the cat", "max_tokens": 2, "tokensift": {"context_id": made["id"]}}
    got, reply = call(server.url + "/v1/completions", body)
    assert got == 410 and "damaged" in reply["error"]["message"]
    assert call(server.url + f"/v1/contexts/{made['id']}", method="DELETE")[0] == 200


def test_a_chat_prefix_context_continues_like_the_whole_chat(server) -> None:
    prefix = [{"role": "user", "content": TEXT}, {"role": "assistant", "content": "the dog ran"}]
    status, made = call(server.url + "/v1/contexts", {"messages": prefix})
    assert status == 200 and made["kind"] == "messages" and made["method"] is None
    question = [{"role": "user", "content": "the red cat ?"}]
    common = {"model": "tiny", "max_tokens": 5, "temperature": 0}
    _, cached = call(server.url + "/v1/chat/completions",
                     {**common, "messages": question, "tokensift": {"context_id": made["id"]}})  # fmt: skip
    _, whole = call(server.url + "/v1/chat/completions", {**common, "messages": prefix + question})
    assert cached["choices"][0]["message"] == whole["choices"][0]["message"]
    assert cached["usage"]["prompt_tokens"] == whole["usage"]["prompt_tokens"]


def test_prompt_compression_shortens_the_document_and_keeps_the_question(server) -> None:
    body = {"model": "tiny", "max_tokens": 3, "temperature": 0,
            "messages": [{"role": "user", "content": TEXT + "\n\nthe cat ?"}],
            "tokensift": {"prompt": {"method": "selective_context", "rate": 0.5}}}  # fmt: skip
    status, reply = call(server.url + "/v1/chat/completions", body)
    assert status == 200, reply
    prompt = reply["tokensift"]["prompt"]
    document_tokens = len(_ids(server.built.loaded.tokenizer, TEXT))
    assert prompt["method"] == "selective_context" and prompt["tokens_before"] == document_tokens
    assert prompt["tokens_after"] == document_tokens // 2
    question_tokens = len(_ids(server.built.loaded.tokenizer, "\n\nthe cat ?\n"))
    assert reply["usage"]["prompt_tokens"] == prompt["tokens_after"] + question_tokens
    body["tokensift"]["prompt"]["rate"] = 2.0
    status, reply = call(server.url + "/v1/chat/completions", body)
    assert status == 400 and "rate" in reply["error"]["message"]
