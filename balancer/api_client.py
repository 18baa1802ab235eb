"""The CLI's client of a running daemon's API: ``xdplb status`` reads, ``xdplb reload`` and the admin verbs post.

Standard library only (urllib), so the verbs work wherever Python does. Where the API is: ``--api URL``, else the
``api.listen`` of ``--config CONFIG``, else ``DEFAULT_URL``; the bearer token for posts: ``--token-file``, else the
config's ``api.token_file`` (none: the API must be on loopback, where admin calls need no token).
"""

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import config

__all__ = ["DEFAULT_URL", "ApiUnavailable", "admin_path", "api_url", "call", "read_token"]

DEFAULT_URL = "http://127.0.0.1:9180"
"""Where the daemon listens by default (``api.listen``)."""


class ApiUnavailable(config.XdplbError, OSError):
    """The API could not be reached, or did not answer like an xdplb API."""


def api_url(running: config.XdplbConfig) -> str:
    """The base URL of the API a config describes; an unspecified listen address (``0.0.0.0``, ``::``) is reached
    over loopback."""
    host, port = running.api.host, running.api.port
    if host.is_unspecified:
        return f"http://{'[::1]' if host.version == 6 else '127.0.0.1'}:{port}"
    return f"http://[{host}]:{port}" if host.version == 6 else f"http://{host}:{port}"


def read_token(path: str | Path) -> str:
    """The bearer token in the file at ``path``; ApiUnavailable if it cannot be read or is empty."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ApiUnavailable(f"cannot read the token file {path}: {error}") from None
    if not token:
        raise ApiUnavailable(f"the token file {path} is empty")
    return token


def admin_path(service: str, backend: str, action: str) -> str:
    """The API path that applies ``action`` (drain, disable, enable, reset) to ``backend`` of ``service``."""
    return f"/api/v1/backends/{urllib.parse.quote(f'{service}/{backend}', safe='/:')}/{action}"


def call(base_url: str, method: str, path: str, *, token: str | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """``method path`` on the API at ``base_url``: (HTTP status, decoded JSON body) for any answer, 4xx and 5xx
    included; ApiUnavailable when nothing answers, or not with JSON."""
    if "://" not in base_url:
        base_url = f"http://{base_url}"
    url = base_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            code, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        code, body = error.code, error.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ApiUnavailable(f"cannot reach the xdplb API at {base_url}: {reason}") from None
    try:
        return code, json.loads(body)
    except ValueError:
        raise ApiUnavailable(f"{url} answered HTTP {code} without JSON: is this an xdplb API?") from None
