"""Database URLs without their secrets: the password of a URL never reaches an error, a log line or a repr."""

from __future__ import annotations

import os
import re

PASSWORD_ENV = ("EDGE_SDK_DB_PASSWORD", "PGPASSWORD")
# Greedy up to the last "@": a password with an unescaped "@" or "/" is still hidden whole (at worst
# more than the password is).
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):(?P<secret>.*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact(url: str) -> str:
    """``url`` with its password (user info or ``?password=``) shown as ``***``."""
    url = _USERINFO.sub(lambda m: f"{m['head']}:***@", str(url))
    return _QUERY_PASSWORD.sub(r"\1***", url)


def env_password() -> str | None:
    """The password from the environment (``EDGE_SDK_DB_PASSWORD``, then ``PGPASSWORD``), for a URL that carries none."""
    return next((os.environ[name] for name in PASSWORD_ENV if os.environ.get(name)), None)


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` on one line, without any of ``secrets`` (a driver's message may quote what it was given)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " ".join(str(text).split())
