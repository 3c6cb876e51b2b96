"""The process environment kept out of request.META (payments_project/wsgi_environ.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from payments_project.wsgi_environ import without_process_environment


def test_values_copied_from_the_process_environment_are_dropped() -> None:
    # given a server that copies its environment into the request (as granian does)
    process_env = {"STRIPE_SECRET_KEY": "sk_live_x", "HTTP_PROXY": "http://proxy:3128", "PATH_INFO": "/x"}
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.update(environ)
        return [b""]

    wrapped = without_process_environment(app, process_env)
    environ = {
        **process_env,
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/x",
        "HTTP_AUTHORIZATION": "Token abc",
        "wsgi.url_scheme": "http",
    }

    # when a request comes in
    wrapped(environ, lambda *args: None)

    # then the copied secrets and the proxy variable are gone, the request's own keys stay
    assert seen == {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/x",
        "HTTP_AUTHORIZATION": "Token abc",
        "wsgi.url_scheme": "http",
    }


def test_a_client_header_that_differs_from_the_process_variable_is_kept() -> None:
    # given HTTP_PROXY in the process environment and a client that sent its own Proxy header
    seen: dict[str, Any] = {}
    wrapped = without_process_environment(
        lambda environ, _: seen.update(environ) or [b""], {"HTTP_PROXY": "a"}
    )

    # when
    wrapped({"HTTP_PROXY": "b"}, lambda *args: None)

    # then
    assert seen == {"HTTP_PROXY": "b"}
