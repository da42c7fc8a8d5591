"""Ray token auth: the environment and ``~/.ray`` -> the token and the ``Authorization`` header, or none.

Input:  ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``; a cluster's host name.
Output: the token (:func:`find_token`), the header for the Jobs SDK (:func:`auth_headers`), or a one-line
        :class:`~lume_ray.cluster.ClusterError`.

Ray's documented sources (docs: "Token Authentication"): with ``RAY_AUTH_MODE=token`` the token is
``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``; with the mode
unset, a cluster on this machine and a token there means token mode (what ``ray start`` itself does). The token
is returned, never printed, logged or stored. Pure: no Ray import, nothing of the package but its error type.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from lume_ray.cluster import ClusterError


def _is_local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host == socket.gethostname()


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


__all__ = ["auth_headers", "find_token"]
