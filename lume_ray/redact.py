"""Credential redaction: a URL or any text -> the same with its passwords and tokens replaced by ``***``.

Input:  a tracking URI, a ``--set`` value, a message, or a nested config mapping.
Output: the same with ``user:password@`` (password only), ``?token=``-style query values and ``Bearer`` tokens
        replaced by :data:`MASK`; :func:`has_secret` says whether there was anything to replace.

Everything lume-ray writes or shows that may hold a user's value goes through here: tracking.json,
experiment.yaml, the console's lines, a submitted job's entrypoint and metadata. The real value is only ever
used to connect (read from the user's experiment or flags at run time; for a job, passed in its environment).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
# Query keys whose values are credentials (matched case-insensitively, as a whole key or a key ending in them).
SECRET_KEYS = ("token", "access_token", "auth", "authorization", "password", "passwd", "pwd", "secret",
               "api_key", "apikey", "key", "sig", "signature", "credential", "credentials", "session")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/?#@\s]*):(?P<password>[^@/?#\s]*)@")
_QUERY = re.compile(r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*[_.-])?(?:" + "|".join(SECRET_KEYS) + r"))=(?P<value>[^&#\s'\"]*)",
                    re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """``text`` with every URL password, secret-named query value and Bearer token replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['key']}={MASK}" if m["value"] else m[0], text)
    return _BEARER.sub(lambda m: f"{m['key']}{MASK}", text)


def redact_url(url: str | None) -> str | None:
    """A URL as it may be written or shown (None stays None)."""
    return None if url is None else redact_secrets(url)


def has_secret(text: str) -> bool:
    """Whether :func:`redact_secrets` would change ``text``."""
    return redact_secrets(text) != text


def userinfo(url: str) -> tuple[str, str, str] | None:
    """``(url without user:password@, user, password)`` for a URL that carries a password; else None."""
    parts = urlsplit(url)
    if parts.password is None:
        return None
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl(), parts.username or "", parts.password


def redact_data(value: Any) -> Any:
    """Every string of a nested mapping / list redacted (experiment.yaml)."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, Mapping):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v) for v in value)
    return value


__all__ = ["MASK", "has_secret", "redact_data", "redact_secrets", "redact_url", "userinfo"]
