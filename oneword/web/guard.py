"""What the gallery lets in: requests for the host it serves, state changes only from its own
pages, and numbers in the store's range, each refusal one 4xx answer with a message and one
log line (no traceback).

A page on any other site can make the browser send requests to http://127.0.0.1:PORT/; the
browser then names that site in the Origin header, which is refused on every route that
changes something. A DNS-rebinding page reaches the server under its own name, which the
Host header carries; only the served host's names are answered at all.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
WILDCARD = ("0.0.0.0", "::", "[::]", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def served_hosts(host: str, port: int, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """The Host header values a gallery served on host:port answers to: that address, its
    loopback names when it is one, this machine's name when serving on every address, and
    the `extra` names (each with the port)."""
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    names = {name, *extra}
    if name in LOOPBACK or name in WILDCARD:
        names |= set(LOOPBACK)
    if name in WILDCARD:
        names.discard(name)
        names.add(socket.gethostname())
    hosts = {f"{n}:{port}" for n in names}
    if port == 80:
        hosts |= names
    return frozenset(h.lower() for h in hosts)


def _allowed(netloc: str, hosts: frozenset[str] | None) -> bool:
    netloc = netloc.lower()
    if hosts is not None:
        return netloc in hosts
    name = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
    return name in LOOPBACK  # no served host given: loopback names at any port


def add_request_checks(app: FastAPI, hosts: frozenset[str] | None) -> None:
    """Refuse foreign Host headers on every route and foreign origins on state changes
    (403), and make a request body or path of the wrong shape one 422 line."""

    @app.middleware("http")
    async def same_site_only(request: Request, call_next):
        host = request.headers.get("host", "")
        if not _allowed(host, hosts):
            return _refuse(request, f"host {host!r} is not served here; open {_home(hosts)}")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("origin")
            site = request.headers.get("sec-fetch-site")
            if origin is not None and not _same_origin(origin, host):
                return _refuse(request, f"origin {origin!r} may not change this gallery")
            if origin is None and site not in (None, "same-origin", "none"):
                return _refuse(request, f"a {site} request may not change this gallery")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path"))
        message = f"{where or 'request'}: {first.get('msg', 'not valid')}"
        log.warning("%s %s: %s", request.method, request.url.path, message)
        return JSONResponse({"detail": message}, status_code=422)


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def _home(hosts: frozenset[str] | None) -> str:
    return f"http://{min(hosts)}/" if hosts else "http://127.0.0.1:PORT/"


def _refuse(request: Request, message: str) -> JSONResponse:
    log.warning("refused %s %s: %s", request.method, request.url.path, message)
    return JSONResponse({"detail": message}, status_code=403)
