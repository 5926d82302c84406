"""The KV methods, one module each (a press: ``score`` + ``compress``), each citing its paper."""
