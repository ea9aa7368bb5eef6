"""One TLS context per process for every HTTP client we open.

Why: ``httpx.AsyncClient()`` builds a new ``ssl.SSLContext`` (loading the CA bundle) each time, ~20 ms of CPU;
flows open a client per run, so at thousands of messages a second that showed up in the benchmark's profile.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
