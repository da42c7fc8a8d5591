"""Ray token auth: the environment and ``~/.ray`` -> the token and the ``Authorization`` header, or none.

Input:  ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``; a cluster's host name.
Output: the token (:func:`find_token`), the header for the Jobs SDK (:func:`auth_headers`; :func:`headers_for`
        checks the transport too), or a one-line :class:`~lume_ray.cluster.ClusterError`.

Ray's documented sources (docs: "Token Authentication"): with ``RAY_AUTH_MODE=token`` the token is
``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``; with the mode
unset, a cluster on this machine and a token there means token mode (what ``ray start`` itself does). The token
is returned, never printed, logged or stored. Pure: no Ray import, nothing of the package but its error type.

The token travels over plain http only to a loopback address (127.0.0.0/8, ::1, localhost: this machine, e.g. the
``ray dashboard cluster.yaml`` tunnel); to any other host only over https (:func:`headers_for`), since whoever
sees it on the wire can run code on the cluster.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from lume_ray.cluster import ClusterError


def _is_local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host == socket.gethostname()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped, ``::ffff:127.0.0.1``) or ``localhost``: traffic that never leaves this
    machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def find_token(required: bool) -> str | None:
    """The token from Ray's documented sources, in their order of precedence (None when there is none)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    named = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text().strip()  # Ray strips whitespace from token files too
    except OSError:
        token = ""
    if required and named and not token:  # Ray treats an unreadable or empty RAY_AUTH_TOKEN_PATH as fatal
        raise ClusterError(f"RAY_AUTH_TOKEN_PATH={named}: cannot read a token from that file")
    return token or None


def auth_headers(host: str) -> dict[str, str]:
    """The ``Authorization`` header to hand the Jobs SDK (its public ``headers`` argument); {} without token auth.

    ``RAY_AUTH_MODE=token``: the token is required. Unset: token mode only for a cluster on this machine when a
    token is found here (as ``ray start --head`` decides). Any other mode is left to the SDK.
    """
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "token":
        token = find_token(required=True)
        if token is None:
            raise ClusterError("RAY_AUTH_MODE=token but no token found: put the cluster's token in "
                               "~/.ray/auth_token, a file named by RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN")
    elif not mode and _is_local(host):
        token = find_token(required=False)
    else:
        token = None
    return {"Authorization": f"Bearer {token}"} if token else {}


def headers_for(url: str) -> dict[str, str]:
    """:func:`auth_headers` for a dashboard URL, refused (one line) when a token would go over plain http to a host
    that is not this machine's loopback."""
    parts = urlparse(url)
    host = parts.hostname or ""
    headers = auth_headers(host)
    if headers and parts.scheme != "https" and not is_loopback(host):
        raise ClusterError(f"--address {url}: the Ray auth token is sent over https only, or over http to a loopback "
                           "address (127.0.0.1, ::1, localhost); use https://, or tunnel the dashboard with "
                           "`ray dashboard cluster.yaml` and pass --address http://127.0.0.1:8265")
    return headers


__all__ = ["auth_headers", "find_token", "headers_for", "is_loopback"]
