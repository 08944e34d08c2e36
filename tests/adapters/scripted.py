"""A scripted SOAP back office for the adapter tests: it answers each POST with the reply it was
given and records the request, so the tests see exactly what an adapter sends and how it reads
any answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.certs import TlsFiles
from gateway.service.server import ServerThread


class ScriptedOffice:
    """Answers each POST to ``path`` with the next (status, body) it was given, as
    ``media_type``; records (headers, body) of every request."""

    def __init__(self, path: str, media_type: str) -> None:
        self.path = path
        self.media_type = media_type
        self.replies: list[tuple[int, bytes]] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route(path, self._answer, methods=["POST"])])

    async def _answer(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.requests.append(({k.lower(): v for k, v in request.headers.items()}, body))
            status, reply = self.replies.pop(0)
        return Response(reply, status, media_type=self.media_type)


@contextmanager
def scripted_office(
    tls: TlsFiles, path: str, media_type: str
) -> Iterator[tuple[ScriptedOffice, str]]:
    """The office served over mutual TLS, and the URL to POST to."""
    office = ScriptedOffice(path, media_type)
    with ServerThread(office.app, tls=tls) as server:
        yield office, server.url + path
