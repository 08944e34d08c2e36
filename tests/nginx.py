"""nginx in front of an upstream on loopback, configured by ``docs/deploy/nginx.conf`` itself.

The example is the one source of truth: ``render_config`` reads it and replaces its production
paths and ports (each replaced line must occur exactly once, so an edit of the example that drops
one fails here, by name, instead of testing something else). ``running_nginx`` starts nginx on
a free loopback port in the foreground, with everything it writes (pid, logs, temporary bodies)
under ``tmp``, and stops it at exit::

    with running_nginx(upstream=server.url, ca=pki.ca_cert, cert=pki.hub_cert,
                       key=pki.hub_key, crl=crl, tmp=tmp_path) as proxy:
        httpx.get(proxy.url + "/", verify=...)

The test is skipped when nginx is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.testing import free_port

__all__ = ["EXAMPLE", "NginxProcess", "nginx_binary", "render_config", "running_nginx"]

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "deploy" / "nginx.conf"
HEADER = "X-SSL-Client-Cert"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
# Temporary-file directives nginx creates directories for at start, used or not: under tmp, not
# the compiled-in /var/lib/nginx (absent, or not writable by whoever runs the tests).
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass
class NginxProcess:
    """A running nginx (its master process) and where it writes."""

    process: subprocess.Popen[bytes]
    port: int
    config: Path
    error_log: Path
    access_log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log(self) -> str:
        """The error log so far (info level: handshakes refused, bodies too large...)."""
        return _read(self.error_log)

    def access(self) -> str:
        """The access log so far, in the example's ``guichet`` format."""
        return _read(self.access_log)

    def alive(self) -> bool:
        return self.process.poll() is None


def nginx_binary() -> str | None:
    """nginx's path, or None; /usr/sbin is not on every user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def render_config(
    *,
    port: int,
    upstream: str,
    ca: Path,
    cert: Path,
    key: Path,
    crl: Path | None,
    tmp: Path,
    header: str = HEADER,
    example: Path = EXAMPLE,
) -> str:
    """The example with its production paths and ports replaced by the test's.

    ``crl=None`` comments out ``ssl_crl`` (no revocation check); ``header`` renames the header
    (for a hub configured with another name).
    """
    target = urlsplit(upstream)
    if target.scheme != "http" or not target.hostname:
        raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
    # Workers run as this user. As root: stay root (the tests' files are in root's 0700 temporary
    # folders, which www-data cannot enter); otherwise nginx cannot switch users at all.
    user = "user root;" if os.geteuid() == 0 else "# user: not root, workers run as the caller"
    temp_paths = "".join(f"\n    {name}_temp_path {tmp / name};" for name in _TEMP_PATHS)
    replacements = {
        "user www-data;": user,
        "worker_processes auto;": "worker_processes 1;",
        "http {": "http {" + temp_paths,
        "access_log /var/log/nginx/guichet-access.log guichet;": (
            f"access_log {tmp / 'access.log'} guichet;"
        ),
        "error_log /var/log/nginx/guichet-error.log warn;": f"error_log {tmp / 'error.log'} info;",
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "ssl_certificate /etc/guichet/proxy/server.pem;": f"ssl_certificate {cert};",
        "ssl_certificate_key /etc/guichet/proxy/server.key;": f"ssl_certificate_key {key};",
        "ssl_client_certificate /etc/guichet/proxy/ca.pem;": f"ssl_client_certificate {ca};",
        "ssl_crl /etc/guichet/proxy/crl.pem;": (
            f"ssl_crl {crl};" if crl else "# ssl_crl: none in this test"
        ),
        "proxy_pass http://127.0.0.1:8080;": f"proxy_pass http://{target.netloc};",
        f"proxy_set_header {HEADER} $ssl_client_escaped_cert;": (
            f"proxy_set_header {header} $ssl_client_escaped_cert;"
        ),
    }
    lines = example.read_text(encoding="utf-8").splitlines()
    for old, new in replacements.items():
        found = [i for i, line in enumerate(lines) if line.strip() == old]
        if len(found) != 1:
            raise AssertionError(f"{example}: expected the line {old!r} once, found {len(found)}")
        indent = lines[found[0]][: len(lines[found[0]]) - len(lines[found[0]].lstrip())]
        lines[found[0]] = indent + new
    return "\n".join(lines) + "\n"


@contextmanager
def running_nginx(
    *,
    upstream: str,
    ca: Path,
    cert: Path,
    key: Path,
    crl: Path | None,
    tmp: Path,
    header: str = HEADER,
) -> Iterator[NginxProcess]:
    """nginx on ``https://127.0.0.1:<free port>`` proxying to ``upstream`` (http://host:port),
    configured by the example; stopped (SIGQUIT, then SIGKILL, bounded) at exit."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in _TEMP_PATHS:
        (tmp / name).mkdir(exist_ok=True)
    nginx = None
    for _attempt in range(3):  # a free port can be taken by someone else before nginx binds it
        nginx = _start(binary, upstream, ca, cert, key, crl, tmp, header)
        if nginx is not None:
            break
    if nginx is None:
        raise RuntimeError(f"nginx found no free port:\n{_read(tmp / 'error.log')[-3000:]}")
    try:
        yield nginx
    finally:
        _stop(nginx)


def _start(
    binary: str,
    upstream: str,
    ca: Path,
    cert: Path,
    key: Path,
    crl: Path | None,
    tmp: Path,
    header: str,
) -> NginxProcess | None:
    """nginx started and accepting connections; None if its port was taken meanwhile."""
    port = free_port()
    config = tmp / "nginx.conf"
    config.write_text(
        render_config(
            port=port,
            upstream=upstream,
            ca=ca,
            cert=cert,
            key=key,
            crl=crl,
            tmp=tmp,
            header=header,
        ),
        encoding="utf-8",
    )
    error_log = tmp / "error.log"
    directives = f"daemon off; pid {tmp / 'nginx.pid'}; error_log {error_log} info;"
    output = tmp / "nginx.out"
    with output.open("ab") as out:
        process = subprocess.Popen(
            # -e: where nginx logs before it has read the configuration (default: stderr).
            [binary, "-p", str(tmp), "-e", str(error_log), "-c", str(config), "-g", directives],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # A group of its own: if the master has to be killed, its workers go with it.
            start_new_session=True,
        )
    nginx = NginxProcess(process, port, config, error_log, tmp / "access.log")
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if not nginx.alive():
            log = nginx.log() + _read(output)
            if "Address already in use" in log:
                return None
            raise RuntimeError(f"nginx exited at start ({process.returncode}):\n{log[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return nginx
        except OSError:
            time.sleep(0.05)
    _stop(nginx)
    raise RuntimeError(f"nginx did not listen within {_START_TIMEOUT} s:\n{nginx.log()[-3000:]}")


def _stop(nginx: NginxProcess) -> None:
    """SIGQUIT (graceful: requests in progress end, then the workers and the master), and
    SIGKILL to nginx's process group if that takes longer than ``_STOP_TIMEOUT``."""
    process = nginx.process
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_TIMEOUT)
    if process.returncode == 0:
        return  # stopped gracefully: its workers ended before it
    # Still running, or the master died on its own (its workers may outlive it): the whole
    # group, which is nginx's own (start_new_session), master and workers.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=_STOP_TIMEOUT)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
