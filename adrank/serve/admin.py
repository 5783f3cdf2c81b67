"""The admin surface's lock, and the bind-address check (``docs/serving.md``, "Deployment").

* Admin endpoints exist only when a token is configured (``adrank serve --admin-token`` or
  ``ADRANK_ADMIN_TOKEN``); otherwise they answer 404 like any unknown path.
* A request must send ``Authorization: Bearer <token>``: none (or another scheme) answers
  401 with ``WWW-Authenticate: Bearer``, a wrong token 403. Tokens are compared with
  :func:`hmac.compare_digest` (constant time) and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket

from fastapi import HTTPException, Request

logger = logging.getLogger(__name__)

#: The environment variable read by ``adrank serve`` when ``--admin-token`` is not given.
ADMIN_TOKEN_ENV = "ADRANK_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512


def check_token(token: str) -> str:
    """Validate a configured admin token (printable ASCII, no spaces, 16-512 chars); the
    error message never contains the token."""
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise ValueError(
            f"the admin token must have {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters "
            f"(it has {len(token)}); make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError(
            "the admin token must be printable ASCII without spaces (it travels in an HTTP header)"
        )
    return token


class AdminAuth:
    """FastAPI dependency: ``Depends(AdminAuth(token))`` on every admin route."""

    def __init__(self, token: str) -> None:
        self._expected = ("Bearer " + check_token(token)).encode("ascii")

    def __repr__(self) -> str:  # never show the token
        return "AdminAuth(<token>)"

    def __call__(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if header is None or not header.lower().startswith("bearer "):
            raise HTTPException(
                401,
                "admin endpoints need 'Authorization: Bearer <admin token>'",
                headers={"WWW-Authenticate": 'Bearer realm="adrank-admin"'},
            )
        given = "Bearer " + header[7:].strip()
        # compare_digest takes time independent of where the strings differ
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self._expected):
            logger.warning("admin request with a wrong token from %s", _client(request))
            raise HTTPException(403, "wrong admin token")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_loopback(host: str) -> bool:
    """True if every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def warn_if_exposed(host: str) -> bool:
    """Log a warning when binding a non-loopback address; returns whether it warned."""
    if is_loopback(host):
        return False
    logger.warning(
        "binding %s, which is not a loopback address: adrank's server has no TLS and no "
        "client authentication. Run it behind a TLS-terminating, authenticating reverse "
        "proxy, and keep /admin/* off the public side (docs/serving.md, Deployment)",
        host,
    )
    return True
