"""The small HTTP/1.1 server behind a node's metrics and web page, on the node's event loop.

Theory of operation
-------------------
* A node answers a handful of GET paths (``/metrics``, ``/health``, the web page and its JSON)
  to scrapers and browsers on a trusted network. That needs no framework: one
  :func:`asyncio.start_server` on the node's own loop, so a handler reads the node between
  two loop iterations, never while another task changes it, and no thread is involved.
* One request per connection (``Connection: close``): a scraper or a page polling once a
  second pays a loopback handshake, and the server keeps no connection state. Bounds: at most
  ``max_connections`` open at once (more get 503 at once), a request head of at most
  ``MAX_REQUEST_BYTES`` that must arrive within ``REQUEST_TIMEOUT_S``; bodies are not read
  (only GET and HEAD are served).
* Routing is an exact match of the path (the query string is handed to the handler). A
  handler is a plain or ``async`` function of a :class:`Request` returning a
  :class:`Response`; one that raises gets a 500 and a logged traceback, and the server goes on.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Union

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 16 * 1024

TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Request:
    method: str                      # GET or HEAD (others are refused before routing)
    path: str                        # without the query string
    query: str
    headers: Mapping[str, str]       # names in lower case


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[Request], Union[Response, Awaitable[Response]]]


def text(status: int, message: str) -> Response:
    return Response(status, TEXT, message.encode() + b"\n")


class HttpServer:
    """Serves ``routes`` (exact path -> :data:`Handler`) on ``host:port`` (0: any free port;
    :attr:`port` holds the bound one after :meth:`start`)."""

    def __init__(self, routes: Mapping[str, Handler], host: str = "127.0.0.1", port: int = 0, *,
                 name: str = "http", not_found: str = "not found",
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port
        self.name = name
        self.not_found = not_found
        self.max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._open = 0

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> HttpServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        """Stop listening (a request being answered finishes on its own)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > self.max_connections:
                await _respond(writer, text(503, "too many requests at once"), "GET")
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
                return
            request = _parse(head)
            if request is None:
                response = text(400, "bad request")
            elif request.method not in ("GET", "HEAD"):
                response = text(405, "only GET")
            else:
                response = await self._route(request)
            await _respond(writer, response, request.method if request else "GET")
        except Exception:
            log.exception("%s request failed", self.name)
        finally:
            self._open -= 1
            writer.close()

    async def _route(self, request: Request) -> Response:
        handler = self.routes.get(request.path)
        if handler is None:
            return text(404, self.not_found)
        try:
            response = handler(request)
            if inspect.isawaitable(response):
                response = await response
            return response
        except Exception:
            log.exception("%s handler for %s failed", self.name, request.path)
            return text(500, "internal error (logged by the node)")


def _parse(head: bytes) -> Request | None:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1].startswith("/"):
        return None
    path, _, query = parts[1].partition("?")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
    return Request(parts[0], path, query, headers)


async def _respond(writer: asyncio.StreamWriter, response: Response, method: str) -> None:
    body = response.body
    extra = "".join(f"{k}: {v}\r\n" for k, v in response.headers)
    head = (f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
            f"Content-Type: {response.content_type}\r\nContent-Length: {len(body)}\r\n{extra}"
            f"Connection: close\r\n\r\n")
    writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
    try:
        await writer.drain()
    except ConnectionError:
        pass


class NodeServer:
    """An :class:`HttpServer` a node runs for operators, named by its main page (``home``):
    :attr:`url` is that page once started. Subclasses give the routes."""

    home = "/"

    def __init__(self, node_id: str, routes: Mapping[str, Handler], host: str, port: int, *, name: str,
                 not_found: str) -> None:
        self.node_id = node_id
        self._http = HttpServer(routes, host, port, name=name, not_found=not_found)

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return self._http.url(self.home)

    async def start(self) -> NodeServer:
        await self._http.start()
        log.info("node %s serves its %s on %s", self.node_id, self._http.name, self.url)
        return self

    def close(self) -> None:
        self._http.close()
