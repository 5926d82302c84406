"""Prompt-compression methods, one module each; registered in :mod:`tokensift.methods`."""
