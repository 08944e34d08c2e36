"""Once the hub answers 202, the message reaches every receiver — whatever fails meanwhile.

Real ``guichet serve`` processes (``gateway.testing.start_hub_process``), real HTTPS with mutual
TLS on loopback, the sandbox's back offices (served here, so that one can be down, or slow), real
stores: the data dir's SQLite file, a schema of the shared PostgreSQL, and a private PostgreSQL
cluster of the test's own that is stopped and started again. Every wait is bounded.

What is checked, each time, from what the back offices recorded and what the evidence says:
every message that got a 202 reached each of its receivers (the receipt names them); a receiver
got a message more than once only where the evidence shows as many attempts for it; the
evidence log verifies (``guichet audit verify``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.certs import DevPki
from gateway.mapping import MappingSet
from gateway.outbox import iso, utc_now
from gateway.sandbox import Sandbox
from gateway.service.server import ServerThread
from gateway.store import open_store
from gateway.testing import (
    HubProcess,
    free_port,
    guichet_command,
    start_hub_process,
    wait_until,
)
from tests.conftest import EXAMPLES, HOME, postgres_schema_url

pytestmark = pytest.mark.slow

SHARED_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
# Short everything: retries within a second, a dead replica's claims free after 3 s, a receiver's
# circuit closed again within a second, checkpoints twice a second.
FAST: dict[str, object] = {
    "delivery_backoff_s": 0.05,
    "delivery_backoff_cap_s": 0.5,
    "delivery_lease_s": 3,
    "delivery_timeout_s": 0.75,  # a lease is at least four adapter timeouts
    "delivery_circuit_cooldown_s": 0.2,
    "delivery_circuit_cooldown_cap_s": 0.5,
    "checkpoint_interval_s": 0.5,
}
# A case's region follows the workplace's postcode: Flanders (REST, JSON), Wallonia, Brussels,
# the German-speaking Community (SOAP).
POSTCODES = ("9000", "4000", "1000", "4700")
FOLLOW_UPS = ("status.updated", "employment.ended", "status.updated")


# -- back offices -----------------------------------------------------------------------------


def _delayed(app: ASGIApp, delay_s: float) -> ASGIApp:
    """``app``, answering each call ``delay_s`` later (a slow back office: deliveries in hand
    when a hub dies or stops)."""

    async def delayed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and delay_s:
            await asyncio.sleep(delay_s)
        await app(scope, receive, send)

    return delayed


class Offices:
    """The sandbox's back offices (which record and deduplicate what they receive), each served
    on a loopback port of its own. A party in ``down`` has its port but nothing listens there
    (connections refused) until ``up(party)``."""

    def __init__(
        self, sandbox: Sandbox, pki: DevPki, *, delay_s: float = 0.0, down: tuple[str, ...] = ()
    ) -> None:
        self.sandbox = sandbox
        self.pki = pki
        self.delay_s = delay_s
        self.ports = {party: free_port() for party in sandbox.offices}
        self.servers: dict[str, ServerThread] = {}
        for party in sandbox.offices:
            if party not in down:
                self.up(party)

    @property
    def endpoints(self) -> dict[str, str]:
        return {
            party: f"https://127.0.0.1:{port}"
            + ("/" if self.sandbox.offices[party].profile.protocol == "soap" else "")
            for party, port in self.ports.items()
        }

    def up(self, party: str) -> None:
        office = self.sandbox.offices[party]
        server = ServerThread(
            _delayed(office.app, self.delay_s), tls=self.pki.party(party), port=self.ports[party]
        )
        server.start()
        self.servers[party] = server

    def receptions(self) -> Counter[tuple[str, str]]:
        """(message id, receiver) → how many times the receiver got it (duplicates included)."""
        return Counter(
            (received.message_id, party)
            for party, office in self.sandbox.offices.items()
            for received in office.received
        )

    def duplicates(self) -> int:
        return sum(office.duplicates for office in self.sandbox.offices.values())

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return MappingSet.load(HOME)


@contextmanager
def _sandbox(mappings: MappingSet, pki: DevPki) -> Iterator[Sandbox]:
    """Every party's back office (never started as a whole: ``Offices`` serves them)."""
    offices = Sandbox(mappings, pki, list(mappings.parties), EXAMPLES, respond=False)
    try:
        yield offices
    finally:
        offices.stop()


@pytest.fixture
def sandbox(mappings: MappingSet, pki: DevPki) -> Iterator[Sandbox]:
    with _sandbox(mappings, pki) as offices:
        yield offices


def _data_dir(folder: Path, pki: DevPki) -> Path:
    """A hub's data dir holding the session's PKI (replicas share it)."""
    shutil.copytree(pki.directory, folder / "pki")
    return folder


@pytest.fixture
def data_dir(tmp_path: Path, pki: DevPki) -> Path:
    return _data_dir(tmp_path / "hub", pki)


# -- the portal's traffic ---------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    message_id: str
    subject: str
    type: str
    receivers: tuple[str, ...]


def _message(name: str, subject: str, postcode: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / "be-platform" / f"{name}.json").read_bytes())
    body["header"].update(messageId=str(uuid.uuid4()), caseReference=subject)
    if postcode is not None:
        body["application"]["employer"]["workplace"]["address"]["postalCode"] = postcode
    return body


@dataclass
class Portal:
    """The portal posting cases (its application, then follow-ups), each case's messages one
    after the other, to the live hubs in turn; what each post got."""

    hubs: Callable[[], list[HubProcess]]
    timeout_s: float = 20.0
    accepted: list[Accepted] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    refusals: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # (when the answer came, what it was, how long it took), monotonic seconds
    answers: list[tuple[float, str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _turn: int = 0

    def post(self, name: str, subject: str, postcode: str | None = None) -> httpx.Response | None:
        """One message to the next live hub; its response (None: no answer came)."""
        hubs = [hub for hub in self.hubs() if hub.alive()]
        if not hubs:
            with self._lock:
                self.outcomes["no hub"] += 1
            time.sleep(0.05)
            return None
        with self._lock:
            self._turn += 1
            hub = hubs[self._turn % len(hubs)]
        body = _message(name, subject, postcode)
        started = time.monotonic()
        try:
            with hub.client(timeout=self.timeout_s) as client:
                response = client.post("/v1/messages", json=body)
        except httpx.HTTPError as exc:
            with self._lock:
                self.outcomes[type(exc).__name__] += 1
                self.answers.append((time.monotonic(), type(exc).__name__, 0.0))
            return None
        with self._lock:
            self.outcomes[str(response.status_code)] += 1
            now = time.monotonic()
            self.answers.append((now, str(response.status_code), now - started))
            if response.status_code == 202:
                receipt = response.json()
                self.accepted.append(
                    Accepted(receipt["messageId"], subject, name, tuple(receipt["receivers"]))
                )
            else:
                self.refusals.append((response.status_code, response.json()))
        return response

    def case(self, number: int) -> None:
        subject = f"SP-CRASH-{uuid.uuid4().hex[:10]}"
        response = self.post("application.submitted", subject, POSTCODES[number % len(POSTCODES)])
        if response is None or response.status_code != 202:
            return  # no case to follow up
        for name in FOLLOW_UPS:
            self.post(name, subject)

    def expected(self) -> set[tuple[str, str]]:
        """(message id, receiver) of every 202."""
        with self._lock:
            return {(a.message_id, r) for a in self.accepted for r in a.receivers}


@contextmanager
def under_load(portal: Portal, threads: int = 3, pause_s: float = 0.0) -> Iterator[Portal]:
    """``threads`` senders posting cases until the block ends (then joined, bounded)."""
    stop = threading.Event()
    numbers = iter(range(10**6))
    lock = threading.Lock()

    def send() -> None:
        while not stop.is_set():
            with lock:
                number = next(numbers)
            portal.case(number)
            stop.wait(pause_s)

    workers = [threading.Thread(target=send, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield portal
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        assert not any(worker.is_alive() for worker in workers), "a sender hung"


# -- what the store and the evidence say ------------------------------------------------------


def sqlite_store(data_dir: Path) -> str:
    """The store of a hub started without ``--store``: its data dir's SQLite file (also when
    the rest of the suite runs on PostgreSQL, which changes the default of this process only)."""
    return f"sqlite:///{(data_dir / 'guichet.db').resolve()}"


def all_delivered(store: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until every delivery in the store is delivered (a row a dead hub held is taken
    again once its lease runs out, even when its receiver already had it); the evidence."""
    settled = wait_until(lambda: set(store.delivery_states()) == {"delivered"}, timeout)
    assert settled, store.delivery_states()
    return [json.loads(leaf.record) for leaf in store.leaves()]


def attempts_in_evidence(records: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(message id, receiver) → the highest attempt a delivery record gives."""
    attempts: dict[tuple[str, str], int] = {}
    for record in records:
        if str(record.get("event", "")).startswith("delivery."):
            key = (record["messageId"], record["receiver"])
            attempts[key] = max(attempts.get(key, 0), int(record["attempt"]))
    return attempts


def wait_delivered(portal: Portal, offices: Offices, timeout: float = 60.0) -> None:
    expected = portal.expected()
    assert expected, f"nothing was accepted: {portal.outcomes}"
    wait_until(lambda: expected <= set(offices.receptions()), timeout=timeout)
    missing = expected - set(offices.receptions())
    assert not missing, f"{len(missing)} of {len(expected)} accepted deliveries never arrived"


def assert_repeats_are_retries(offices: Offices, records: list[dict[str, Any]]) -> int:
    """A receiver got a message n > 1 times only where the evidence shows n attempts or more
    (a hub that died holding a claim: the next claimer says so). The number of repeats."""
    attempts = attempts_in_evidence(records)
    repeated = {key: n for key, n in offices.receptions().items() if n > 1}
    unexplained = {key: n for key, n in repeated.items() if attempts.get(key, 0) < n}
    assert not unexplained, f"received more often than attempted: {unexplained}"
    return sum(n - 1 for n in repeated.values())


def assert_audit_verifies(*args: str) -> None:
    result = guichet_command("audit", "verify", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK" in result.stdout, result.stdout


def operator_metric(hub: HubProcess, name: str) -> float | None:
    """A metric of the hub, as its operator reads it (None: no answer, or no such metric)."""
    try:
        with hub.client_as(hub.pki.role("operator"), timeout=3) as client:
            text = client.get("/metrics").text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


# -- a. a receiver down, then up --------------------------------------------------------------


@dataclass
class DownThenUp:
    portal: Portal
    offices: Offices
    order: dict[str, list[str]]  # case → the message ids Flanders received, first times only


@pytest.fixture(scope="module")
def receiver_down_then_up(
    tmp_path_factory: pytest.TempPathFactory, mappings: MappingSet, pki: DevPki
) -> Iterator[DownThenUp]:
    """Flanders' back office is down (connections refused) while 3 cases of 4 messages each are
    accepted; it comes up after their first attempts failed, and answers 503 three more times.
    (Run once for the two tests below.)"""
    with _sandbox(mappings, pki) as sandbox:
        yield from _down_then_up(_data_dir(tmp_path_factory.mktemp("down"), pki), sandbox, pki)


def _down_then_up(data_dir: Path, sandbox: Sandbox, pki: DevPki) -> Iterator[DownThenUp]:
    offices = Offices(sandbox, pki, down=("be-vlg-wse",))
    hub = start_hub_process(data_dir, endpoints=offices.endpoints, settings=FAST)
    try:
        portal = Portal(lambda: [hub])
        subjects = [f"SP-DOWN-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for subject in subjects:  # interleaved: case 1's message 1, case 2's message 1, …
            assert portal.post("application.submitted", subject, "9000") is not None
        for name in FOLLOW_UPS:
            for subject in subjects:
                portal.post(name, subject)
        assert portal.outcomes == Counter({"202": 12}), portal.refusals

        def first_ones_failed() -> bool:
            # The application of each case has been tried and waits for its retry (the rest of
            # its case waits behind it).
            with hub.client() as client:
                states = [
                    client.get(f"/v1/messages/{a.message_id}").json()["deliveries"][0]
                    for a in portal.accepted
                    if a.type == "application.submitted"
                ]
            return all(s["state"] == "retrying" and s["attempts"] >= 1 for s in states)

        assert wait_until(first_ones_failed, timeout=20), (
            "deliveries to a dead receiver not retried"
        )
        assert not sandbox.offices["be-vlg-wse"].received
        sandbox.offices["be-vlg-wse"].fail_next(3, 503)
        offices.up("be-vlg-wse")
        wait_delivered(portal, offices, timeout=30)
        store = open_store(sqlite_store(data_dir), data_dir)
        try:
            records = all_delivered(store)
        finally:
            store.close()
        flanders = [r for r in sandbox.offices["be-vlg-wse"].received if not r.duplicate]
        order = {s: [r.message_id for r in flanders if r.subject == s] for s in subjects}
        assert offices.duplicates() == 0
        assert assert_repeats_are_retries(offices, records) == 0
        failed = [r for r in records if r["event"] == "delivery.failed"]
        assert len(failed) >= 3 + 3  # each case's first refused at least once, then three 503s
        assert hub.terminate() == 0
        assert_audit_verifies("--data-dir", str(data_dir))
        yield DownThenUp(portal, offices, order)
    finally:
        hub.kill()
        offices.close()


def test_a_receiver_down_then_up_gets_every_message_exactly_once(
    receiver_down_then_up: DownThenUp,
) -> None:
    portal, offices = receiver_down_then_up.portal, receiver_down_then_up.offices
    assert len(portal.accepted) == 12
    assert offices.receptions() == Counter(portal.expected())  # each once, nothing else


def test_a_receiver_down_then_up_gets_each_case_in_acceptance_order(
    receiver_down_then_up: DownThenUp,
) -> None:
    portal = receiver_down_then_up.portal
    for subject, received in receiver_down_then_up.order.items():
        accepted = [a.message_id for a in portal.accepted if a.subject == subject]
        assert received == accepted, subject


# -- b. replicas on PostgreSQL: one killed, then the sequencer --------------------------------


@pytest.fixture
def shared_postgres_url() -> Iterator[str]:
    try:
        import psycopg

        with psycopg.connect(SHARED_POSTGRES, connect_timeout=3):
            pass
    except Exception as exc:  # noqa: BLE001 - no database: nothing to test
        pytest.skip(f"no PostgreSQL at {SHARED_POSTGRES}: {exc}")
    name = f"crash_{uuid.uuid4().hex[:12]}"
    url = postgres_schema_url(SHARED_POSTGRES, name)
    try:
        yield url
    finally:
        with psycopg.connect(SHARED_POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_replicas_on_postgres_survive_a_kill_and_the_sequencer_s_death(
    data_dir: Path, sandbox: Sandbox, pki: DevPki, shared_postgres_url: str
) -> None:
    url = shared_postgres_url
    # Slow back offices: a replica killed mid-way dies holding deliveries.
    offices = Offices(sandbox, pki, delay_s=0.1)
    settings = {**FAST, "delivery_workers": 2}
    with ThreadPoolExecutor(3) as starting:
        replicas = list(
            starting.map(
                lambda _: start_hub_process(
                    data_dir, store=url, endpoints=offices.endpoints, settings=settings
                ),
                range(3),
            )
        )
    try:
        assert wait_until(
            lambda: sum(operator_metric(h, "guichet_sequencer") == 1.0 for h in replicas) == 1,
            timeout=20,
        ), "no single sequencer among the replicas"
        leader = next(h for h in replicas if operator_metric(h, "guichet_sequencer") == 1.0)
        others = [h for h in replicas if h is not leader]
        # The portal posts to two replicas (the third is a standby that delivers and may lead);
        # requests in flight to a replica that is killed get no answer, the others are answered.
        survivor = others[1]
        front = [leader, others[0]]
        portal = Portal(lambda: front)
        with under_load(portal, threads=3):
            assert wait_until(lambda: len(portal.accepted) >= 15, timeout=30)
            others[0].kill()  # a replica dies mid-way, holding claims
            front = [leader]
            accepted_at_kill = len(portal.accepted)
            assert wait_until(lambda: len(portal.accepted) >= accepted_at_kill + 10, timeout=30)
            front = [leader, survivor]
            leader.kill()  # then the sequencer
            killed_at = datetime.now(UTC).isoformat()
            front = [survivor]
            accepted_at_kill = len(portal.accepted)
            assert wait_until(lambda: len(portal.accepted) >= accepted_at_kill + 10, timeout=30)
        assert wait_until(lambda: operator_metric(survivor, "guichet_sequencer") == 1.0, 15), (
            "the surviving replica did not take over as sequencer"
        )
        wait_delivered(portal, offices, timeout=60)
        # Every answer was a 202: no 5xx from the replicas left, whatever died.
        assert not portal.refusals, portal.refusals[:3]
        assert "no hub" not in portal.outcomes

        store = open_store(url, data_dir)
        try:
            records = all_delivered(store)

            # The survivor checkpoints the whole log, deliveries after the leader's death included.
            def covered() -> bool:
                latest = store.latest_checkpoint()
                return latest is not None and latest["tree_size"] == store.leaf_count()

            assert wait_until(covered, timeout=20), "no checkpoint covers the log after the kill"
            latest = store.latest_checkpoint()
            assert latest is not None and latest["time"] > killed_at.replace("+00:00", "Z")
        finally:
            store.close()
        repeats = assert_repeats_are_retries(offices, records)
        assert survivor.terminate() == 0
        assert_audit_verifies("--store", url, "--cert", str(data_dir / "pki" / "hub-signing.pem"))
        print(
            f"accepted {len(portal.accepted)}, outcomes {dict(portal.outcomes)},"
            f" repeats {repeats}, duplicates {offices.duplicates()}"
        )
    finally:
        for replica in replicas:
            replica.kill()
        offices.close()


# -- c. kill -9 of a single SQLite hub ----------------------------------------------------------


def test_a_sqlite_hub_killed_under_load_delivers_every_accepted_message_after_restart(
    data_dir: Path, sandbox: Sandbox, pki: DevPki
) -> None:
    offices = Offices(sandbox, pki, delay_s=0.05)
    hub = start_hub_process(data_dir, endpoints=offices.endpoints, settings=FAST)
    restarted: HubProcess | None = None
    try:
        portal = Portal(lambda: [hub])
        with under_load(portal, threads=3):
            assert wait_until(lambda: len(portal.accepted) >= 30, timeout=30)
            hub.kill()
        accepted = list(portal.accepted)
        restarted = start_hub_process(data_dir, endpoints=offices.endpoints, settings=FAST)
        # Every 202 is in the store: the sender sees it and its receivers.
        with restarted.client() as client:
            for message in accepted:
                status = client.get(f"/v1/messages/{message.message_id}")
                assert status.status_code == 200, message
                receivers = {d["receiver"] for d in status.json()["deliveries"]}
                assert receivers == set(message.receivers)
        wait_delivered(portal, offices, timeout=60)
        store = open_store(sqlite_store(data_dir), data_dir)
        try:
            records = all_delivered(store)
        finally:
            store.close()
        assert restarted.terminate() == 0
        repeats = assert_repeats_are_retries(offices, records)
        assert_audit_verifies("--data-dir", str(data_dir))
        print(f"accepted {len(accepted)}, outcomes {dict(portal.outcomes)}, repeats {repeats}")
    finally:
        hub.kill()
        if restarted is not None:
            restarted.kill()
        offices.close()


# -- d. the database restarted under load -------------------------------------------------------


@dataclass
class PrivateCluster:
    """A PostgreSQL cluster of this test's own (never the shared one), run as ``postgres``."""

    bindir: Path
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [
                "runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"),
                "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
                "-o", options, "-w", "-t", "30", *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdbs or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's initdb, runuser and root to make a private cluster")
    bindir = initdbs[-1].parent
    root = Path(tempfile.mkdtemp(prefix="guichet-pg-", dir="/tmp"))
    shutil.chown(root, "postgres", "postgres")
    cluster = PrivateCluster(bindir, root, free_port())
    try:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(root / "data"),
             "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        cluster.pg_ctl("start")
        yield cluster
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(root / "data"),
             "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def test_the_database_restarted_under_load_gives_503s_then_the_hub_recovers_alone(
    data_dir: Path, sandbox: Sandbox, pki: DevPki, private_postgres: PrivateCluster
) -> None:
    url = postgres_schema_url(private_postgres.url, "guichet")
    offices = Offices(sandbox, pki, delay_s=0.05)
    hub = start_hub_process(data_dir, store=url, endpoints=offices.endpoints, settings=FAST)
    try:
        portal = Portal(lambda: [hub])
        with under_load(portal, threads=2, pause_s=0.05):
            assert wait_until(lambda: len(portal.accepted) >= 10, timeout=30)
            private_postgres.pg_ctl("-m", "fast", "stop")
            down_at = len(portal.refusals)
            # While it is away: 503 store.unavailable, quickly; health still answers.
            assert wait_until(lambda: len(portal.refusals) >= down_at + 3, timeout=30)
            with hub.client(timeout=5) as client:
                started = time.monotonic()
                refused = client.post(
                    "/v1/messages", json=_message("application.submitted", "SP-DOWN-1", "9000")
                )
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "store.unavailable"
                assert time.monotonic() - started < 10
            with hub.client_as(hub.pki.role("operator"), timeout=5) as client:
                assert client.get("/healthz").status_code == 200
                assert client.get("/readyz").status_code == 503
            private_postgres.pg_ctl("start")
            up_at = time.monotonic()
            back = len(portal.accepted)
            # Back: the same hub process accepts again, without a restart.
            assert wait_until(lambda: len(portal.accepted) >= back + 10, timeout=30), (
                portal.outcomes
            )
        assert hub.alive()
        refused_after = [a for a in portal.answers if a[0] > up_at and a[1] != "202"]
        first_after = min(a[0] for a in portal.answers if a[0] > up_at and a[1] == "202")
        slowest_503 = max(a[2] for a in portal.answers if a[1] == "503")
        assert slowest_503 < 10, "a refusal while the database is away must come quickly"
        assert set(portal.outcomes) <= {"202", "503"}, portal.outcomes
        codes = {body.get("code") for status, body in portal.refusals}
        assert codes <= {"store.unavailable"}, portal.refusals[:3]
        assert portal.outcomes["503"] >= 3
        wait_delivered(portal, offices, timeout=60)
        store = open_store(url, data_dir)
        try:
            records = all_delivered(store)
        finally:
            store.close()
        repeats = assert_repeats_are_retries(offices, records)
        assert hub.terminate() == 0
        assert_audit_verifies("--store", url, "--cert", str(data_dir / "pki" / "hub-signing.pem"))
        print(
            f"accepted {len(portal.accepted)}, outcomes {dict(portal.outcomes)}, repeats {repeats},"
            f" slowest 503 {slowest_503:.2f} s, first 202 {first_after - up_at:.2f} s after the"
            f" database was back, refusals after {len(refused_after)}"
        )
    finally:
        hub.kill()
        offices.close()


# -- e. graceful shutdown -------------------------------------------------------------------------


def test_sigterm_finishes_deliveries_in_hand_and_exits_0(
    data_dir: Path, sandbox: Sandbox, pki: DevPki
) -> None:
    # Slow back offices: every worker has a delivery in hand when SIGTERM comes.
    offices = Offices(sandbox, pki, delay_s=0.3)
    hub = start_hub_process(data_dir, endpoints=offices.endpoints, settings=FAST)
    restarted: HubProcess | None = None
    try:
        portal = Portal(lambda: [hub])
        with under_load(portal, threads=3):
            assert wait_until(lambda: len(portal.accepted) >= 20, timeout=30)
            started, signalled_at = time.monotonic(), iso(utc_now())
            assert hub.terminate(timeout=30) == 0, hub.log()[-2000:]
            stopped_in = time.monotonic() - started
        assert stopped_in < 20
        received_before = offices.receptions()
        store = open_store(sqlite_store(data_dir), data_dir)
        try:
            states = store.delivery_states()
            finished = [
                r
                for r in map(json.loads, (leaf.record for leaf in store.leaves()))
                if r["event"] == "delivery.delivered" and r["time"] > signalled_at
            ]
        finally:
            store.close()
        assert "delivering" not in states, states  # every claim in hand was finished
        assert finished, "no delivery was in hand at SIGTERM: the test proves nothing"
        assert states.get("delivered", 0) == len(received_before), (states, len(received_before))
        restarted = start_hub_process(data_dir, endpoints=offices.endpoints, settings=FAST)
        wait_delivered(portal, offices, timeout=60)
        assert offices.duplicates() == 0  # nothing in hand was left to be sent again
        assert restarted.terminate() == 0
        assert_audit_verifies("--data-dir", str(data_dir))
        print(
            f"accepted {len(portal.accepted)}, stopped in {stopped_in:.1f} s,"
            f" {len(finished)} deliveries finished after SIGTERM, states at stop {states}"
        )
    finally:
        hub.kill()
        if restarted is not None:
            restarted.kill()
        offices.close()
