"""Instruction-tuning examples read from JSONL, one per line, in the four shapes users have.

A row is Alpaca (``instruction``, optional ``input``, ``output``), ``prompt``/``response``,
``question``/``answer`` (GSM8K) or chat ``messages`` (the last one the assistant's answer). Each becomes an
:class:`Example`: the conversation before the response, and the response. A line that is not one of these
raises :class:`~tokensift.errors.BadRowError` naming its line number. Files are read a line at a time, so a
file of any size streams.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokensift.errors import BadRowError, EmptyInputError, InputEncodingError, InputFileError

Message = dict[str, str]
SHAPES = "Alpaca (instruction, input, output), prompt/response, question/answer or chat messages"


@dataclass(frozen=True)
class Example:
    """The conversation before the response (``messages``, user turn last) and the ``response`` to train on."""

    messages: tuple[tuple[str, str], ...]
    response: str

    @property
    def instruction(self) -> str:
        """The user's text (every turn joined), as IFD conditions on it."""
        return "\n\n".join(content for _, content in self.messages)


def _text(row: dict[str, Any], key: str, line: int, *, empty_ok: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise BadRowError(f"field {key!r} must be a string, got {type(value).__name__}", line=line)
    if not value.strip() and not empty_ok:
        raise BadRowError(f"field {key!r} is empty", line=line)
    return value


def parse_row(row: Any, line: int) -> Example:
    """One decoded JSON line as an :class:`Example`; :class:`BadRowError` says what is wrong with it."""
    if not isinstance(row, dict):
        raise BadRowError(f"expected a JSON object, got {type(row).__name__}", line=line)
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise BadRowError("'messages' must be a list of at least two messages", line=line)
        turns = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise BadRowError(f"message {index} needs a string 'content'", line=line)
            role = message.get("role")
            if role not in ("system", "user", "assistant"):
                raise BadRowError(f"message {index} has role {role!r}; roles are system, user, assistant", line=line)
            turns.append((str(role), str(message["content"])))
        if turns[-1][0] != "assistant" or not turns[-1][1].strip():
            raise BadRowError("the last message must be a non-empty assistant answer", line=line)
        return Example(tuple(turns[:-1]), turns[-1][1])
    if "instruction" in row and "output" in row:
        instruction = _text(row, "instruction", line)
        extra = _text(row, "input", line, empty_ok=True) if row.get("input") is not None else ""
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return Example((("user", prompt),), _text(row, "output", line))
    for ask, reply in (("prompt", "response"), ("question", "answer")):
        if ask in row and reply in row:
            return Example((("user", _text(row, ask, line)),), _text(row, reply, line))
    raise BadRowError(f"no known fields (keys: {', '.join(sorted(row)) or 'none'}); expected {SHAPES}", line=line)


@dataclass
class Line:
    """A line of the file: its number, its exact text, and the example or the error it gave."""

    number: int
    text: str
    example: Example | None
    error: BadRowError | None


def check_file(path: Path) -> None:
    """:class:`InputFileError` unless ``path`` is a readable file."""
    if path.is_dir():
        raise InputFileError(f"{path} is a directory, not a JSONL file")
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")


def read_lines(path: Path) -> Iterator[Line]:
    """Every non-blank line of a JSONL file, parsed; bad lines come back with their error, not raised."""
    check_file(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputEncodingError(f"{path} line {number}: not UTF-8 ({exc.reason})") from None
            if not text.strip():
                continue
            try:
                yield Line(number, text, parse_row(json.loads(text), number), None)
            except json.JSONDecodeError as exc:
                yield Line(number, text, None, BadRowError(f"not valid JSON ({exc.msg})", line=number))
            except BadRowError as exc:
                yield Line(number, text, None, exc)


def load_examples(path: Path) -> list[Example]:
    """Every example of a small file; the first bad line raises, and so does a file with no rows."""
    found = []
    for line in read_lines(path):
        if line.error is not None:
            raise line.error
        assert line.example is not None
        found.append(line.example)
    if not found:
        raise EmptyInputError(f"{path} is empty: no rows")
    return found


@dataclass(frozen=True)
class Encoded:
    """Token ids of an example: the prompt (chat template and generation header) and the response (+ end token)."""

    prompt: list[int]
    response: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prompt + self.response


def encode(tokenizer: Any, messages: tuple[tuple[str, str], ...], response: str) -> Encoded:
    """Tokens of ``messages`` then ``response``, the response tokenized on its own so it is the same ids
    whatever comes before (what IFD compares). Chat models get their template and end-of-turn token."""
    template = getattr(tokenizer, "chat_template", None)
    if template:
        chat = [{"role": role, "content": content} for role, content in messages]
        text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        prompt = list(tokenizer(text, add_special_tokens=False).input_ids)
    else:
        joined = "\n\n".join(content for _, content in messages)
        prompt = list(tokenizer(f"{joined}\n\n", add_special_tokens=True).input_ids) if joined else []
    if not prompt:  # something must predict the response's first token
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        prompt = [int(start)] if start is not None else []
    reply = list(tokenizer(response, add_special_tokens=False).input_ids)
    if tokenizer.eos_token_id is not None:
        reply.append(int(tokenizer.eos_token_id))
    return Encoded(prompt, reply)


def encode_example(tokenizer: Any, example: Example) -> Encoded:
    return encode(tokenizer, example.messages, example.response)


def encode_unconditional(tokenizer: Any, example: Example) -> Encoded:
    """The response after an empty user turn: IFD's "response alone" with the same ids and the same header."""
    return encode(tokenizer, (("user", ""),), example.response)


def pad_id(tokenizer: Any) -> int:
    """The id right-padding uses (masked out everywhere): the pad token, else end of text, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
