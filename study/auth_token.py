"""Ray's token file (``~/.ray/auth_token``, or ``$RAY_AUTH_TOKEN_PATH``): the key to a cluster's
dashboard and Jobs API, and so to running code on it. It is created readable by its owner only
(0600, in a 0700 folder), and one found readable by others is made private before it is used.

    path = ensure_token()   # create it if missing; make it private if it is not
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path


def token_path() -> Path:
    """Where Ray looks for the token file."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_token() -> Path:
    """The token file, created (0600) with a new random token if missing, else made private."""
    path = token_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent process
            return make_private(path)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return path
    return make_private(path)


def make_private(path: Path) -> Path:
    """Remove group and other permissions from an existing token file (with a note)."""
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            print(f"note: {path} was readable by others (mode {mode:o}); made it 0600",
                  file=sys.stderr)
    return path
