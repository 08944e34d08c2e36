"""The ``guichet`` command. Errors of the hub are caught once, here, and printed with their code."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import ConfigurationError, GatewayError

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guichet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the hub (HTTPS, mutual TLS)")
    serve.add_argument("--data-dir", type=Path, default=None)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="sqlite:///path or postgresql://user@host/db (default: the data dir's SQLite file);"
        " replicas sharing one PostgreSQL store form one hub",
    )

    serve.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="PARTY=URL",
        help="deliver to this party at URL instead of parties.toml's endpoint (repeatable)",
    )

    db = commands.add_parser("db", help="the store")
    db_cmd = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_cmd.add_parser("upgrade", help="create the store, or bring it to this version")
    _store_options(upgrade)

    demo = commands.add_parser("demo", help="run cases of the procedure against the sandbox")
    demo.add_argument(
        "--scenario",
        action="append",
        default=None,
        choices=[*_scenario_names(), "all"],
        metavar="NAME",
        help="a scenario to run (repeatable), or 'all': "
        + ", ".join(_scenario_names())
        + " (default: first-flanders)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the data here (default: a fresh temporary folder)",
    )

    certs = commands.add_parser("certs", help="development PKI")
    certs_cmd = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_cmd.add_parser("init", help="write a dev CA, the hub's and every party's certs")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    revoke = certs_cmd.add_parser("revoke", help="add a certificate to the dev CA's crl.pem")
    revoke.add_argument("--dir", type=Path, required=True, help="folder of `guichet certs init`")
    revoke.add_argument("cert", type=Path, help="the PEM certificate to revoke")

    sandbox = commands.add_parser("sandbox", help="run the sandbox back offices")
    sandbox.add_argument("--pki", type=Path, required=True, help="folder of `guichet certs init`")
    sandbox.add_argument("--hub-url", default=None, help="where replies are sent")
    sandbox.add_argument("--no-respond", action="store_true", help="record only, never reply")
    sandbox.add_argument(
        "--free-ports",
        action="store_true",
        help="listen on free ports, not on the endpoints of parties.toml",
    )

    validate = commands.add_parser(
        "validate", help="check one message as the hub would, and print the problems"
    )
    validate.add_argument("file", type=Path)
    validate.add_argument("--party", required=True, help="the party that sends it")

    sign = commands.add_parser(
        "sign",
        help="sign a message as a back office does: print a REST body's X-JWS-Signature, or"
        " write a SOAP envelope with its WS-Security header",
    )
    sign.add_argument("file", type=Path, help="the body as it will be sent (JSON, XML, envelope)")
    sign.add_argument("--cert", type=Path, required=True, help="the party's certificate (PEM)")
    sign.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    sign.add_argument(
        "--soap", action="store_true", help="the file is a SOAP envelope: print it signed"
    )

    mappings = commands.add_parser("mappings", help="schemas and mappings")
    mappings_cmd = mappings.add_subparsers(dest="mappings_command", required=True)
    mappings_cmd.add_parser("check", help="check every mapping and golden pair")

    party = commands.add_parser("party", help="parties of the hub")
    party_cmd = party.add_subparsers(dest="party_command", required=True)
    new = party_cmd.add_parser(
        "new", help="scaffold a party that works end to end, to reshape to its back office"
    )
    new.add_argument("party_id", metavar="ID", help="e.g. be-bru-bee")
    new.add_argument("--protocol", choices=("rest", "soap11", "soap12"), required=True)
    new.add_argument("--format", choices=("json", "xml"), required=True)
    new.add_argument("--name", help="its name (written in nl, fr, de and en, to translate)")
    new.add_argument("--enterprise-number", help="KBO/BCE number (default: a made-up valid one)")
    new.add_argument("--sends", nargs="+", action="extend", default=[], metavar="TYPE")
    new.add_argument("--receives", nargs="+", action="extend", default=[], metavar="TYPE")
    new.add_argument("--role", help="portal, region, federal or municipality (default: federal)")
    new.add_argument("--region", help="the region a region party is competent for")
    new.add_argument(
        "--route", action="store_true", help="add it to the routes of the types it receives"
    )
    new.add_argument("--home", type=Path, default=None, help="default: the hub's home")

    audit = commands.add_parser("audit", help="evidence log")
    audit_cmd = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_cmd.add_parser(
        "verify", help="verify a bundle, or a data dir's store: every hash, signature and proof"
    )
    verify.add_argument("bundle", type=Path, nargs="?", help="a bundle of `audit export`")
    verify.add_argument("--data-dir", type=Path, default=None, help="verify this hub's store")
    verify.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="verify this store (sqlite:///path or a path) with --cert, instead of a data dir's",
    )
    verify.add_argument(
        "--cert", type=Path, default=None, help="the hub's evidence certificate (with --store)"
    )
    verify.add_argument("--ca", type=Path, default=None, help="the chain must end at this CA")
    verify.add_argument(
        "--tsa-ca",
        type=Path,
        default=None,
        help="timestamp tokens must chain to this authority's root (default: their own certs)",
    )
    verify.add_argument(
        "--against",
        type=Path,
        default=None,
        help="an earlier bundle: its checkpoints must still hold (no deletion, no rewrite)",
    )
    export = audit_cmd.add_parser("export", help="write a range of the log as a bundle (zip)")
    export.add_argument("--from", dest="start", default=None, help="leaf index or ISO time")
    export.add_argument("--to", dest="end", default=None, help="leaf index or ISO time")
    export.add_argument("--out", type=Path, required=True)
    _store_options(export)
    export.add_argument("--with-payloads", action="store_true", help="add the bodies, in clear")
    export.add_argument(
        "--checkpoint", action="store_true", help="sign a checkpoint of the whole log first"
    )
    replay = audit_cmd.add_parser(
        "replay",
        help="re-run parse, validation and mapping of logged messages with the pinned versions",
    )
    replay.add_argument("--from", dest="start", metavar="INDEX|TIME", help="leaf index or time")
    replay.add_argument("--to", dest="end", metavar="INDEX|TIME", help="leaf index or time")
    replay.add_argument("--data-dir", type=Path, default=None)
    replay.add_argument(
        "--redeliver",
        metavar="RECEIVER",
        help="send each replayed message's original body to this receiver again (same id)",
    )

    purge = audit_cmd.add_parser(
        "purge",
        help="erase the bodies of messages received before DATE (their keys are destroyed);"
        " sealed as a payload.purged record",
    )
    purge.add_argument(
        "--before", required=True, metavar="DATE", help="2026-01-31 (UTC) or an RFC 3339 time"
    )
    _store_options(purge)

    box = commands.add_parser("outbox", help="deliveries: list them, retry or discard dead letters")
    box_cmd = box.add_subparsers(dest="outbox_command", required=True)
    listing = box_cmd.add_parser("list", help="deliveries, newest first")
    listing.add_argument(
        "--state",
        choices=("pending", "delivering", "delivered", "retrying", "dead", "discarded"),
        default=None,
    )
    listing.add_argument("--receiver", default=None, metavar="PARTY")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON document")
    _store_options(listing)
    retry = box_cmd.add_parser(
        "retry", help="a dead letter back to pending, due now (sealed as delivery.requeued)"
    )
    retry.add_argument("delivery_id", type=int, metavar="DELIVERY-ID")
    retry.add_argument("--reason", default=None, help="why, for the evidence")
    _store_options(retry)
    drop = box_cmd.add_parser(
        "discard", help="set a dead letter aside for good (sealed as delivery.discarded)"
    )
    drop.add_argument("delivery_id", type=int, metavar="DELIVERY-ID")
    drop.add_argument("--reason", required=True, help="why, for the evidence")
    _store_options(drop)
    return parser


def _store_options(command: argparse.ArgumentParser) -> None:
    """Where the hub's store is: its data dir's SQLite file, or the --store of `serve`."""
    command.add_argument("--data-dir", type=Path, default=None)
    command.add_argument("--store", default=None, metavar="URL", help="as for serve")


def _settings(data_dir: Path | None, **extra: object):  # type: ignore[no-untyped-def]
    from gateway.config import Settings

    values = {k: v for k, v in {"data_dir": data_dir, **extra}.items() if v is not None}
    return Settings(**values)  # type: ignore[arg-type]


def _pair(given: str, option: str) -> tuple[str, str]:
    name, sep, value = given.partition("=")
    if not sep or not name or not value:
        raise ConfigurationError(f"{option} {given!r}: expected NAME=VALUE")
    return name, value


def _where(url: str) -> str:
    """A store's address as it may be printed (a file, or a URL without its password)."""
    from gateway.store import sqlite_path
    from gateway.store.postgres import redacted

    path = sqlite_path(url)
    return str(path) if path is not None else redacted(url)


def _pem_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates of a PEM file, or a clear configuration error."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: not a readable PEM certificate ({exc})") from exc


def _scenario_names() -> list[str]:
    from gateway.demo import SCENARIOS

    return list(SCENARIOS)


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from gateway.demo import demo_log_level, run_demo
        from gateway.hub import configure_logging

        configure_logging(demo_log_level())
        names = args.scenario or ["first-flanders"]
        if "all" in names:
            names = _scenario_names()
        return 0 if run_demo(args.data_dir, sys.stdout, names).ok else 1
    if args.command == "serve":
        from gateway.certs import DevPki
        from gateway.config import HubConfig
        from gateway.hub import Hub, configure_logging
        from gateway.service.app import create_app
        from gateway.service.server import serve_forever

        config = HubConfig.load(
            _settings(args.data_dir, host=args.host, port=args.port, store=args.store)
        )
        configure_logging(config.settings.log_level)
        endpoints = dict(_pair(given, "--endpoint") for given in args.endpoint)
        # Keys are loaded, never made here: `guichet certs init` writes a development set.
        hub = Hub.open(config, endpoints=endpoints)
        pki = DevPki.at(config.pki_dir)
        hub.start()
        try:
            # Behind a TLS-terminating proxy (behind_proxy) the hub listens plain HTTP and
            # believes the forwarded certificate from the trusted_proxies only.
            tls = None if config.settings.behind_proxy else pki.hub
            serve_forever(create_app(hub), config.settings.host, config.settings.port, tls)
        finally:
            hub.close()
        return 0
    if args.command == "db":
        from gateway.config import HubConfig

        config = HubConfig.load(_settings(args.data_dir, store=args.store))
        store = config.open_store()  # opening a store migrates it
        try:
            applied, version = store.applied, store.version()
        finally:
            store.close()
        print(
            f"{_where(config.store_url)}: at version {version}"
            + (f" ({applied} applied)" if applied else "")
        )
        return 0
    if args.command == "certs" and args.certs_command == "revoke":
        from gateway.certs import DevPki, revoke

        pki = DevPki.at(args.dir)
        try:
            added = revoke(pki, args.cert)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot revoke {args.cert}: {exc}") from exc
        print(f"{'revoked' if added else 'already revoked:'} {args.cert} (in {pki.crl})")
        return 0
    if args.command == "certs":
        from gateway.certs import init_dev_pki
        from gateway.config import HubConfig

        config = HubConfig.load(_settings(None))
        parties = config.parties.identities()
        try:
            pki = init_dev_pki(args.dir, parties, force=args.force)
        except FileExistsError:
            # A PKI from before bodies were encrypted: add its master key, touch nothing else.
            from gateway.certs import DevPki, write_master_key

            if not write_master_key(DevPki.at(args.dir).payload_key):
                raise
            print(f"wrote the payload master key to {DevPki.at(args.dir).payload_key} (mode 0600)")
            return 0
        print(
            f"wrote a development PKI to {pki.directory} (CA, hub, {len(parties)} parties,"
            " operator and auditor roles, test certificates and crl.pem); private keys are"
            " mode 0600, never commit them"
        )
        return 0
    if args.command == "sandbox":
        return _sandbox(args)
    if args.command == "sign":
        from gateway import jws, wssec
        from gateway.signing import SigningKey

        signer = SigningKey.from_files(args.cert, args.key)
        body = args.file.read_bytes()
        if args.soap:
            sys.stdout.buffer.write(wssec.sign_envelope(body, signer))
        else:
            print(jws.sign_detached(body, signer))
        return 0
    if args.command == "validate":
        from gateway.checkfile import check_file, render
        from gateway.config import HubConfig
        from gateway.mapping import MappingSet

        config = HubConfig.load(_settings(None))
        if args.party not in config.parties:
            raise ConfigurationError(f"no party {args.party!r} in parties.toml")
        checked = check_file(args.file, args.party, MappingSet.load(config.home), config.parties)
        print(render(checked))
        return 0 if checked.ok else 1
    if args.command == "mappings":
        from gateway.config import Settings
        from gateway.mapping import main as mappings_main

        return mappings_main(["check", str(Settings().home)])
    if args.command == "party":
        from gateway.scaffold import main as party_main

        return party_main(args)
    if args.command == "audit" and args.audit_command == "replay":
        from gateway.replay import main as replay_main

        return replay_main(args.data_dir, args.start, args.end, args.redeliver, sys.stdout)

    if args.command == "outbox":
        return _outbox(args)
    if args.command == "audit" and args.audit_command == "purge":
        return _purge(args)
    if args.command == "audit":
        return _audit(args)
    return 2


def _audit(args: argparse.Namespace) -> int:
    from gateway import bundle
    from gateway.audit import evidence_certificate_problem, verify_chain
    from gateway.certs import DevPki
    from gateway.config import HubConfig
    from gateway.evidence import HubSigner
    from gateway.payloads import Keyring

    ca_file = getattr(args, "ca", None)
    trusted_ca = _pem_certificates(ca_file)[0] if ca_file else None
    if args.audit_command == "export":
        from gateway.outbox import iso, utc_now

        config = HubConfig.load(_settings(args.data_dir, store=args.store))
        pki = DevPki.at(config.pki_dir)
        snapshot = bundle.read_store(config.store_url)
        store = None
        if args.checkpoint or args.with_payloads:
            keyring = Keyring.from_files(pki.payload_key, pki.retired_payload_keys)
            store = config.open_store(keyring if args.with_payloads else None, existing=True)
        try:
            if args.checkpoint and store is not None:
                signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
                row = bundle.sign_checkpoint(snapshot.leaves, signer, iso(utc_now()))
                store.write(lambda unit: unit.add_checkpoint(**row))
                snapshot = bundle.read_store(config.store_url)
            first, last = bundle.resolve_range(snapshot.leaves, args.start, args.end)
            chain = pki.signing_cert.read_bytes() + pki.ca_cert.read_bytes()
            manifest = bundle.export_bundle(
                snapshot,
                chain,
                first,
                last,
                args.out,
                exported_at=iso(utc_now()),
                payload_source=store.payload if args.with_payloads and store else None,
            )
        finally:
            if store is not None:
                store.close()
        kept = sum(manifest["payloads"].values())
        print(
            f"wrote {args.out}: leaves {first} to {last} of a {manifest['treeSize']}-leaf"
            f" checkpoint, {len(manifest['checkpoints'])} checkpoints,"
            f" {len(manifest['artefacts'])} artefacts, {kept} payloads"
        )
        return 0
    if args.bundle is not None:
        if args.data_dir is not None:
            raise ConfigurationError("verify either a bundle or --data-dir, not both")
        report = bundle.verify_bundle(
            args.bundle,
            trusted_ca=trusted_ca,
            against=args.against,
            check_timestamp=bundle.openssl_timestamp_check(args.tsa_ca),
        )
        what = f"{args.bundle}: {report.leaves} records"
    else:
        config = HubConfig.load(_settings(args.data_dir))
        pki = DevPki.at(config.pki_dir)
        database, cert_file = config.store_url, args.cert or pki.signing_cert
        if args.store is not None:
            if args.data_dir is not None or args.cert is None:
                raise ConfigurationError("--store needs --cert, and excludes --data-dir")
            database = args.store
        # With the hub's master key (a data dir's), every kept body is decrypted and checked.
        master: Keyring | None = (
            Keyring.from_files(pki.payload_key, pki.retired_payload_keys)
            if args.store is None and pki.payload_key.is_file()
            else None
        )
        snapshot = bundle.read_store(database, master)
        certificate = _pem_certificates(cert_file)[0]
        # The auditor's copy needs the certificates only, never the private key.
        ca_file = pki.ca_cert if args.store is None else ca_file
        chain_problem = (
            verify_chain([certificate, *_pem_certificates(ca_file)], trusted_ca)
            if ca_file is not None and ca_file.is_file()
            else evidence_certificate_problem(certificate)
        )
        trusted: list[dict[str, object]] = []
        problem = None
        if args.against is not None:
            trusted, problem = bundle.trusted_checkpoints(args.against, trusted_ca)
        if chain_problem or problem:
            why = f"certificate chain: {chain_problem}" if chain_problem else problem
            print(why, file=sys.stderr)
            print("FAILED")
            return 1
        report = bundle.verify_store(
            snapshot,
            certificate,
            trusted=trusted,
            check_timestamp=bundle.openssl_timestamp_check(args.tsa_ca),
        )
        what = f"{_where(database)}: {report.leaves} leaves"
    for problem in report.problems:
        print(problem, file=sys.stderr)
    print(
        f"{what}, {report.checkpoints} checkpoints, {report.artefacts} artefacts,"
        f" {report.payloads} payloads"
        + (f", {report.trusted} trusted checkpoints held" if args.against else "")
        + f"; log {report.log_id}, root {report.root}: {'OK' if report.ok else 'FAILED'}"
    )
    return 0 if report.ok else 1


def _purge(args: argparse.Namespace) -> int:
    from gateway.certs import DevPki
    from gateway.config import HubConfig
    from gateway.evidence import HubSigner
    from gateway.payloads import parse_before, purge

    before = parse_before(args.before)
    config = HubConfig.load(_settings(args.data_dir, store=args.store))
    pki = DevPki.at(config.pki_dir)
    signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
    # No master key needed: erasing destroys keys, it never reads a body.
    store = config.open_store(existing=True)
    try:
        result = purge(store, signer, before)
        if result.leaf_index is not None:
            store.erase_freed()
    finally:
        store.close()
    if result.leaf_index is None:
        print(f"nothing to purge: no body kept of a message received before {args.before}")
    else:
        print(
            f"purged {len(result.digests)} bodies of messages received before {args.before};"
            f" sealed as payload.purged, leaf {result.leaf_index}"
        )
    return 0


def _outbox(args: argparse.Namespace) -> int:
    import json

    from gateway import outbox
    from gateway.certs import DevPki
    from gateway.config import HubConfig
    from gateway.evidence import HubSigner
    from gateway.payloads import actor

    config = HubConfig.load(_settings(args.data_dir, store=args.store))
    # No master key: the outbox's rows say what happened, no body is read.
    store = config.open_store(existing=True)
    try:
        if args.outbox_command == "list":
            limit = outbox.check_listing(args.state, args.limit)
            rows = store.list_deliveries(args.state, args.receiver, limit)
            entries = [outbox.delivery_entry(row) for row in rows]
            if args.json:
                print(json.dumps({"deliveries": entries}, indent=2))
            else:
                _print_deliveries(entries)
            return 0
        pki = DevPki.at(config.pki_dir)
        signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
        by = {**actor(), "command": f"guichet outbox {args.outbox_command}"}
        if args.outbox_command == "retry":
            row = outbox.requeue(store, signer, args.delivery_id, by=by, reason=args.reason)
            print(f"delivery {row.id} ({row.receiver}) requeued: pending, due now")
        else:
            row = outbox.discard(store, signer, args.delivery_id, by=by, reason=args.reason)
            print(f"delivery {row.id} ({row.receiver}) discarded")
    finally:
        store.close()
    return 0


def _print_deliveries(entries: list[dict[str, object]]) -> None:
    """One line per delivery: ids, receiver, state, attempts, last outcome, its time."""

    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    print(f"{'ID':>6}  {'MESSAGE':<36}  {'RECEIVER':<12} {'STATE':<10} {'TRIES':>5}  LAST / AT")
    for entry in entries:
        when = (
            entry["deliveredAt"]
            or entry["nextAttemptAt"]
            or entry["deadAt"]
            or entry["discardedAt"]
        )
        last = entry["reason"] if entry["state"] == "discarded" else entry["lastError"]
        print(
            f"{entry['id']:>6}  {cell(entry['messageId']):<36}  {cell(entry['receiver']):<12}"
            f" {cell(entry['state']):<10} {cell(entry['attempts']):>5}  {cell(last)} / {cell(when)}"
        )
    print(f"{len(entries)} deliveries")


def _sandbox(args: argparse.Namespace) -> int:
    import signal
    import threading
    from urllib.parse import urlsplit

    from gateway.certs import DevPki
    from gateway.config import HubConfig
    from gateway.mapping import MappingSet
    from gateway.sandbox import Sandbox

    config = HubConfig.load(_settings(None))
    mappings = MappingSet.load(config.home)
    # By default each office listens where parties.toml says the hub will deliver to it, so
    # `guichet serve` and `guichet sandbox` work together as they are.
    ports = (
        {}
        if args.free_ports
        else {p.id: urlsplit(p.endpoint).port or 443 for p in config.parties.parties.values()}
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Sandbox(
        mappings,
        DevPki.at(args.pki),
        list(config.parties.parties),
        config.home / "examples",
        hub_url=args.hub_url,
        respond=not args.no_respond,
        ports=ports,
    ) as sandbox:
        for party, url in sandbox.endpoints.items():
            print(f"{party:<12} {url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except GatewayError as error:
        print(f"guichet: {error.code}: {error.detail}", file=sys.stderr)
        return 1
    except OSError as error:  # a missing or existing file the operator named: no traceback
        where = f": {error.filename}" if error.filename else ""
        print(f"guichet: {error.strerror or error}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
