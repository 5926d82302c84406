"""``tokensift serve``: an OpenAI-compatible server with compressed context caching and continuous batching.

:func:`tokensift.serve.server.build` loads nothing itself: given a loaded model it returns the FastAPI app
with its engine. :mod:`~tokensift.serve.app` is the HTTP surface, :mod:`~tokensift.serve.engine` the
decoding loop, :mod:`~tokensift.serve.store` the context store, :mod:`~tokensift.serve.metrics` the
Prometheus metrics, :mod:`~tokensift.serve.load` the load test, :mod:`~tokensift.serve.cli` the command.
"""
