"""Who may call the admin endpoints (``POST /api/v1/...``) of the HTTP API.

- With a token (``api.token_file``; required by the config when ``api.listen`` is not loopback), a request must
  carry ``Authorization: Bearer <token>``; the file is read on each admin request, so a new token takes effect
  without a restart. A configured file that cannot be read, or is empty, refuses every admin request (fail
  closed) rather than opening the API.
- Without a token the API must be bound to loopback, and then admin requests are open to local processes. Two
  browser attacks on such an open local API are refused: a cross-site request (its ``Origin`` differs from the
  ``Host`` it was sent to) and DNS rebinding (a ``Host`` that is a name other than ``localhost``).

Read endpoints (status, config, metrics) need the same bearer token when ``api.read_token_required`` is set
(``authorize_read``); ``/healthz`` and the console's static files carry no data and are never guarded.

A header that is not ASCII (aiohttp decodes it as UTF-8 with surrogate escapes) is compared as bytes and simply
does not match: a 401, never a 500.
"""

import hmac
import ipaddress
import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

import config

__all__ = ["authorize", "authorize_read", "read_token"]

log = logging.getLogger(__name__)


def _refuse(status: type[web.HTTPError], message: str, **headers: str) -> web.HTTPError:
    return status(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding white space stripped); OSError or ValueError (empty) when unusable."""
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError("empty token file")
    return token


def _loopback_host(host_header: str) -> bool:
    """Whether a ``Host`` header names this machine's loopback (``127.0.0.1:9180``, ``[::1]``, ``localhost``)."""
    host = urlsplit(f"//{host_header}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def authorize(request: web.Request, *, api: config.ApiConfig, loopback: bool) -> None:
    """Return if ``request`` may change state, else raise the HTTP error to answer with.

    ``loopback`` says whether the listener is bound to a loopback address; ``api`` is the running config's section.
    """
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
        log.warning("event=api_refused reason=cross_origin origin=%s remote=%s", origin, request.remote)
        raise _refuse(web.HTTPForbidden, "cross-origin request refused")
    if api.token_file is None:
        if not loopback:
            raise _refuse(web.HTTPForbidden, "admin requests need api.token_file when the API is not bound to loopback")
        if not _loopback_host(request.host):
            log.warning("event=api_refused reason=host host=%s remote=%s", request.host, request.remote)
            raise _refuse(web.HTTPForbidden, "Host must be a loopback address or localhost")
        return
    _require_token(request, api.token_file, what="admin API")


def authorize_read(request: web.Request, *, api: config.ApiConfig) -> None:
    """Return if ``request`` may read status, config or metrics, else raise the HTTP error to answer with."""
    if not api.read_token_required:
        return
    if api.token_file is None:  # the config refuses this; fail closed all the same
        raise _refuse(web.HTTPServiceUnavailable, "read API unavailable: no token file")
    _require_token(request, api.token_file, what="read API")


def _require_token(request: web.Request, token_file: Path, *, what: str) -> None:
    try:
        token = read_token(token_file)
    except (OSError, ValueError) as error:
        log.error("event=api_token_unreadable path=%s error=%s", token_file, error)
        raise _refuse(web.HTTPServiceUnavailable, f"{what} unavailable: token file unreadable") from None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    given = presented.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, token.encode("utf-8", "surrogateescape")):
        log.warning("event=api_refused reason=token remote=%s", request.remote)
        challenge = {"WWW-Authenticate": 'Bearer realm="xdplb"'}
        raise _refuse(web.HTTPUnauthorized, "missing or wrong bearer token", **challenge)
