"""Errors as users see them: one line each (the CLI prints them after "error: ")."""

from __future__ import annotations


def one_line(e: BaseException, limit: int = 500) -> str:
    """`Type: message` of an exception on one line: its last non-empty line, where Python and
    Ray put the cause of a chained or remote error, cut to `limit` characters."""
    lines = [s for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[-1].strip() if lines else ''}"[:limit]


def squeeze(text: object, limit: int = 240) -> str:
    """`text` on one line, shortened: some libraries' errors list every model or every key."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
