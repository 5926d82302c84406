"""Rendering results for people: terminal views (rich) and self-contained HTML pages."""
