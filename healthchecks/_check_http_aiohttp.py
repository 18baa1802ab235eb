"""The HTTP(S) check on aiohttp's client: the reference the lean checker is held to (same tests, same reasons).

It costs about three times the lean checker's CPU per check (``make bench-healthchecks``).
"""

import functools
import types

import aiohttp
import yarl

import config
from healthchecks import _failure, _http_spec, _linger

__all__ = ["AiohttpChecker"]


class AiohttpChecker:
    """Runs one HTTP(S) check against one backend with an ``aiohttp.ClientSession`` of its own."""

    start: _failure.Start | None = None

    def __init__(
        self, check: config.HttpCheck, address: config.IpAddress, port: int, *, mark: int | None = None
    ) -> None:
        self._mark = mark
        self._spec = _http_spec.HttpSpec(check, address, port)
        self._url = yarl.URL(self._spec.url, encoded=True)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=self._spec.timeout)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(_connected)
            trace.on_connection_reuseconn.append(_connected)
            connector = aiohttp.TCPConnector(
                force_close=not self._spec.check.keepalive,
                limit=1,
                ssl=self._spec.ssl or False,
                socket_factory=functools.partial(_linger.reset_socket, mark=self._mark),
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trace_configs=[trace], auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def run(self) -> _failure.Verdict:
        spec = self._spec
        progress = {"phase": "connecting"}
        try:
            async with self._open().request(
                spec.check.method,
                self._url,
                headers=spec.headers,
                allow_redirects=False,
                timeout=self._timeout,
                server_hostname=spec.server_hostname,
                trace_request_ctx=progress,
            ) as response:
                body = bytearray()
                truncated = False
                if spec.want_body:
                    while len(body) < spec.check.max_body_bytes:
                        chunk = await response.content.read(spec.check.max_body_bytes - len(body))
                        if not chunk:
                            break
                        body += chunk
                    truncated = len(body) >= spec.check.max_body_bytes and not response.content.at_eof()
                if truncated or not spec.check.keepalive:
                    response.close()
                return spec.judge(response.status, bytes(body), truncated=truncated)
        except aiohttp.ClientConnectorCertificateError as error:
            return False, _failure.describe_error(error.certificate_error, timeout=spec.timeout, phase="connecting")
        except aiohttp.ClientConnectorError as error:
            return False, _failure.describe_error(error.os_error, timeout=spec.timeout, phase="connecting")
        except aiohttp.ServerDisconnectedError:
            return False, "connection closed before a complete response"
        except aiohttp.ClientResponseError as error:
            return False, _failure.one_line(f"bad response: {error.message}")
        except aiohttp.ClientPayloadError as error:
            return False, _failure.one_line(f"bad response: body: {error}")
        except (OSError, TimeoutError) as error:
            return False, _failure.describe_error(error, timeout=spec.timeout, phase=progress["phase"])
        except aiohttp.ClientError as error:
            return False, _failure.one_line(f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def release(self) -> None:
        """Kept connections stay with the session until ``close()``: closing it needs the loop."""


async def _connected(session: aiohttp.ClientSession, context: types.SimpleNamespace, params: object) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, dict):
        progress["phase"] = "waiting for the response"
