"""Credentials stay in the process they were given to. A storage URL's password is masked
wherever the URL is written or printed (study.json, the summary, errors, a Ray Job's command
line, Tune's saved searcher state); a study submitted to a cluster gets it through its
environment (``$STUDY_STORAGE_PASSWORD``), which is also how a user may pass it instead of
putting it in ``--storage``.

    redact("postgresql://me:pw@db/x")      # 'postgresql://me:***@db/x'
    with_password("postgresql://me@db/x")  # the password from $STUDY_STORAGE_PASSWORD, if set
"""

from __future__ import annotations

import os
import re

PASSWORD_ENV = "STUDY_STORAGE_PASSWORD"
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
#: Full URLs this process was given, by their redacted form: a saved searcher holds only the
#: redacted URL and gets the full one back here when Tune restores it (study/search.py).
_known: dict[str, str] = {}


def _parse(url: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return None


def _replace_password(parsed, password: str | None):
    from sqlalchemy.engine import URL

    return URL.create(parsed.drivername, parsed.username, password, parsed.host, parsed.port,
                      parsed.database, parsed.query)


def redact(url: str | None) -> str | None:
    """`url` with its password, if any, replaced by ***."""
    if not url:
        return url
    parsed = _parse(url)
    if parsed is None:  # not SQLAlchemy's: mask anything shaped like user:password@
        return _PASSWORD_IN_URL.sub(r"\1***@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def password(url: str | None) -> str | None:
    parsed = _parse(url) if url else None
    return None if parsed is None or parsed.password is None else str(parsed.password)


def without_password(url: str) -> str:
    parsed = _parse(url)
    if parsed is None or parsed.password is None:
        return url
    return _replace_password(parsed, None).render_as_string(hide_password=False)


def with_password(url: str, env=None) -> str:
    """`url` with the password from $STUDY_STORAGE_PASSWORD when it names a user but has no
    password of its own; remembered so that its redacted form can be revealed again."""
    env = os.environ if env is None else env
    parsed = _parse(url)
    if parsed is not None and parsed.password is None and parsed.username and \
            env.get(PASSWORD_ENV):
        url = _replace_password(parsed, env[PASSWORD_ENV]).render_as_string(hide_password=False)
    if password(url) is not None:
        _known[redact(url)] = url
    return url


def reveal(url: str) -> str:
    """The full URL behind a redacted one this process was given (or can rebuild from
    $STUDY_STORAGE_PASSWORD); `url` itself otherwise."""
    if url in _known:
        return _known[url]
    parsed = _parse(url)
    if parsed is not None and parsed.password == "***" and os.environ.get(PASSWORD_ENV):
        return with_password(without_password(url))
    return url


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret in `secrets` replaced by ***."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text
