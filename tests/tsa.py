"""A real RFC 3161 timestamping authority on loopback, for tests.

``LocalTsa`` makes a throwaway CA and a TSA certificate with openssl (extendedKeyUsage critical
timeStamping) in a directory of its own, and answers ``application/timestamp-query`` POSTs on
127.0.0.1 (a free port) with the output of ``openssl ts -reply``. Switches simulate trouble:

- ``mode = "ok"``: a granted response from openssl;
- ``mode = "unavailable"``: HTTP 503;
- ``mode = "bad-imprint"`` / ``"bad-nonce"``: a genuine, signed token over another imprint or nonce;
- ``mode = "rejection"``: a TimeStampResp whose status is rejection;
- ``down()`` / ``up()``: the listening socket closed (connection refused) and opened again on
  the same port.

Usage::

    with LocalTsa(tmp_path / "tsa") as tsa:
        settings = {"tsa_urls": (tsa.url,)}
        ...
        tsa.verify(statement, token)  # openssl ts -verify
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from asn1crypto import tsp  # type: ignore[import-untyped]

from gateway.timestamps import TimeStampResp

__all__ = ["LocalTsa", "make_tsa_pki"]

_OPENSSL_CONFIG = """\
[ tsa ]
default_tsa = guichet_test_tsa

[ guichet_test_tsa ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
other_policies = 1.3.6.1.4.1.99999.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=30
    )


def make_tsa_pki(directory: Path) -> Path:
    """A CA (ca.pem) and a TSA certificate (tsa.pem, tsa.key) signed by it; the openssl config."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tsa.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, nonRepudiation\n"
        "extendedKeyUsage = critical, timeStamping\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Guichet test TSA CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-keyout", "tsa.key", "-out", "tsa.csr",
        "-subj", "/CN=Guichet test TSA",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "tsa.ext", "-out", "tsa.pem",
        cwd=directory,
    )  # fmt: skip
    (directory / "serial").write_text("01\n")
    config = directory / "tsa.cnf"
    config.write_text(_OPENSSL_CONFIG.format(dir=directory))
    return config


class LocalTsa:
    """An RFC 3161 authority on 127.0.0.1, answering with ``openssl ts -reply``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config = make_tsa_pki(directory)
        self.ca = directory / "ca.pem"
        self.mode = "ok"
        self.requests = 0  # POSTs received
        self.granted = 0  # genuine tokens answered
        self._openssl_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tsa"

    def up(self) -> None:
        """Listen (again, on the same port once it had one)."""
        if self._server is not None:
            return
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = None

    def __enter__(self) -> LocalTsa:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.down()

    # -- answers ----------------------------------------------------------------------------------
    def reply(self, query: bytes) -> bytes:
        """``openssl ts -reply`` for a DER TimeStampReq (the mode may change what it answers)."""
        if self.mode == "rejection":
            return bytes(
                TimeStampResp(
                    {"status": {"status": "rejection", "fail_info": {"bad_request"}}}
                ).dump()
            )
        if self.mode in ("bad-imprint", "bad-nonce"):
            request = tsp.TimeStampReq.load(query)
            if self.mode == "bad-imprint":
                hashed = bytes(request["message_imprint"]["hashed_message"].native)
                request["message_imprint"]["hashed_message"] = bytes(b ^ 0xFF for b in hashed)
            else:
                request["nonce"] = request["nonce"].native + 1
            query = bytes(request.dump(force=True))
        name = uuid.uuid4().hex
        query_file = self.directory / f"{name}.tsq"
        reply_file = self.directory / f"{name}.tsr"
        query_file.write_bytes(query)
        try:
            with self._openssl_lock:  # one serial file
                _openssl(
                    "ts", "-reply", "-config", self.config, "-queryfile", query_file,
                    "-out", reply_file,
                    cwd=self.directory,
                )  # fmt: skip
            self.granted += 1
            return reply_file.read_bytes()
        finally:
            query_file.unlink(missing_ok=True)
            reply_file.unlink(missing_ok=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                tsa.requests += 1
                length = int(self.headers.get("Content-Length", "0"))
                query = self.rfile.read(length)
                if tsa.mode == "unavailable":
                    self._answer(503, b"down for maintenance", "text/plain")
                    return
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self._answer(415, b"application/timestamp-query only", "text/plain")
                    return
                try:
                    body = tsa.reply(query)
                except (subprocess.CalledProcessError, ValueError):
                    self._answer(400, b"bad query", "text/plain")
                    return
                self._answer(200, body, "application/timestamp-reply")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        return Handler

    # -- checks -----------------------------------------------------------------------------------
    def verify(
        self, statement: bytes, token: bytes, workdir: Path
    ) -> subprocess.CompletedProcess[str]:
        """``openssl ts -verify -token_in`` of a stored token against the statement's bytes."""
        name = uuid.uuid4().hex
        data = workdir / f"{name}.statement"
        token_file = workdir / f"{name}.tst"
        data.write_bytes(statement)
        token_file.write_bytes(token)
        return subprocess.run(
            [
                "openssl", "ts", "-verify", "-data", str(data), "-in", str(token_file),
                "-token_in", "-CAfile", str(self.ca),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
