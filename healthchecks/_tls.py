"""TLS client contexts for HTTPS checks, shared between checks with the same settings (they are costly to build)."""

import functools
import ssl

__all__ = ["client_context"]


@functools.lru_cache(maxsize=64)
def client_context(*, verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the chain and name against ``ca_file`` (or the system store) if ``verify``."""
    if verify:
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
