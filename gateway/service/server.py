"""Running an ASGI app under uvicorn: in a background thread (tests, sandboxes) or for the CLI.

With ``tls`` the server is HTTPS with client certificates required, and the app finds the
caller's certificate through ``gateway.service.tls.client_certificate(scope)``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from gateway.certs import TlsFiles
from gateway.service.tls import MTLSHttpToolsProtocol, server_ssl_context

__all__ = ["ServerThread", "serve_forever"]

_LOOPBACK = "127.0.0.1"


class ServerThread:
    """An ASGI app served on a loopback port (a free one unless ``port`` is given) from a
    background thread.

    ``with ServerThread(app, tls=pki.hub) as server: httpx.get(server.url + "/health", ...)``
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tls: TlsFiles | None = None,
        port: int = 0,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._tls = tls
        self._requested_port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        # log_config=None: the host process (tests, the hub) owns logging; uvicorn must not
        # reconfigure it every time a server starts.
        self._server = uvicorn.Server(_config(app, tls, log_config=None))
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the server is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{_LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start serving; returns once the server accepts connections (or raises)."""
        if self._thread is not None:
            raise RuntimeError("a ServerThread starts once")
        # Bound here, before the thread runs, so the port is known and no other process can
        # take it between choosing and listening (port 0: the OS picks a free one).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self._requested_port:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((_LOOPBACK, self._requested_port))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"uvicorn-{self.port}",
            daemon=True,  # a test that forgets stop() must not hang the interpreter at exit
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._close_socket()
                raise RuntimeError("the server exited during startup (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start within {self._start_timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop gracefully (bounded); idempotent."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(self._stop_timeout)
        if self._thread.is_alive():
            # Still draining connections or background tasks: stop waiting for them.
            self._server.force_exit = True
            self._thread.join(self._stop_timeout)
        self._close_socket()
        if self._thread.is_alive():
            raise RuntimeError(f"the server did not stop within {2 * self._stop_timeout} s")

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _close_socket(self) -> None:
        # uvicorn closes it on shutdown; closing again is harmless and covers failed startups.
        if self._socket is not None:
            self._socket.close()


class _StoppableServer(uvicorn.Server):
    """uvicorn's server, whose SIGINT/SIGTERM end the serving and nothing else.

    uvicorn raises a captured signal again once it has shut down, so that the process ends as the
    signal would have ended it: the caller's clean-up (closing the hub: deliveries in hand
    finished, last checkpoint, store closed) would never run, and the exit status would be the
    signal's. Here the handlers are restored and ``run`` returns."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stops = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve_forever(app: ASGIApp, host: str, port: int, tls: TlsFiles | None) -> None:
    """Serve until SIGINT/SIGTERM, then return (graceful: requests in progress are answered,
    within uvicorn's graceful-shutdown timeout); for the CLI, which then closes the hub."""
    _StoppableServer(_config(app, tls, host=host, port=port)).run()


def _config(
    app: ASGIApp,
    tls: TlsFiles | None,
    *,
    host: str = _LOOPBACK,
    port: int = 0,
    **extra: Any,
) -> uvicorn.Config:
    ssl_options: dict[str, Any] = {}
    if tls is not None:
        # Our context, not uvicorn's ssl_* options: one place decides TLS >= 1.2 and CERT_REQUIRED.
        context = server_ssl_context(tls)

        def factory(_: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return context

        ssl_options["ssl_context_factory"] = factory
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=MTLSHttpToolsProtocol if tls is not None else "httptools",
        # WebSocket scopes would not carry the TLS extension, so no upgrade path is offered.
        ws="none",
        # Never rewrite the peer address from X-Forwarded-For: which proxy a request came from
        # decides whether its forwarded certificate is believed (gateway.identities).
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=5,
        **ssl_options,
        **extra,
    )
