"""Keep the server process's own environment out of each request's WSGI environ."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# What a server puts in the environ itself (PEP 3333 / CGI); everything else that equals the
# process environment was copied from it, not sent by the client.
_REQUEST_KEYS = frozenset(
    {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "RAW_URI",
        "REQUEST_URI",
    }
)


def without_process_environment(app: WSGIApp, process_env: Mapping[str, str] | None = None) -> WSGIApp:
    """granian starts each request's environ from a copy of os.environ (as CGI did), which would
    put DJANGO_SECRET_KEY, STRIPE_SECRET_KEY and DATABASE_URL in every request.META (error
    reports, stored webhook headers) and make an HTTP_PROXY variable look like a client header.
    Entries equal to the process environment at start are dropped before Django sees the request.
    """
    startup = dict(os.environ if process_env is None else process_env)
    copied = frozenset(startup) - _REQUEST_KEYS

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for key in copied.intersection(environ):
            if environ[key] == startup[key]:
                del environ[key]
        return app(environ, start_response)

    return application
