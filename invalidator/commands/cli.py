"""The ``invalidator`` command line (also ``python -m invalidator``).

Exit codes: 0 success, 1 runtime failure or problems found, 2 usage or config error.
User errors print one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from invalidator import __version__
from invalidator.commands.check import offline_findings, online_findings
from invalidator.commands.replay import replay
from invalidator.config import Config, load_config
from invalidator.config.build import compile_rules
from invalidator.errors import InvalidatorError, SourceError
from invalidator.redact import redact
from invalidator.runtime.logs import configure, get_logger
from invalidator.runtime.metrics import Metrics
from invalidator.runtime.telemetry import Health
from invalidator.sources.base import ChangeSource

CONFIG_HELP = "YAML configuration (default: $INVALIDATOR_CONFIG, else /etc/invalidator/config.yaml)"


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    configure(config.log.format, config.log.level)
    return config


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args)
    log = get_logger(command="replay")
    summary = replay(config, args.files, apply=args.apply, out=sys.stdout, log=log)
    sys.stdout.flush()
    log.info(
        "replay done",
        changes=summary.changes,
        operations=summary.operations,
        skipped_keys=summary.skipped,
        applied=summary.applied or None,
        node_errors=len(summary.node_errors) or None,
    )
    for failure in summary.node_errors:
        print(f"replay: {failure}", file=sys.stderr)
    return 1 if summary.node_errors else 0


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    source = args.config or "config"
    findings = offline_findings(config, source)
    if not args.offline:
        findings += online_findings(config, source)
    for finding in findings:
        print(finding)
    errors = [f for f in findings if f.level == "error"]
    tables = {r.qualified_table for r in config.rules}
    nodes = sum(len(p.servers) for p in config.pools.values())
    print(
        f"{source}: {len(config.rules)} rules on {len(tables)} tables, "
        f"{len(config.pools)} pools ({nodes} static nodes): "
        f"{len(errors)} errors, {len(findings) - len(errors)} warnings"
    )
    return 1 if errors else 0


def cmd_run(args: argparse.Namespace) -> int:
    from invalidator.runtime.http import HttpServer
    from invalidator.runtime.supervisor import Supervisor, install_signal_handlers
    from invalidator.sources.postgres import ValueQueries

    config = _load(args)
    log = get_logger()
    metrics = Metrics()
    health = Health()
    source = _source(config)
    assert config.source.dsn is not None  # _source checked it
    supervisor = Supervisor(
        config,
        source,
        metrics=metrics,
        log=log,
        health=health,
        values=ValueQueries(config.source.dsn.get_secret_value()),
        drain_timeout=args.drain_timeout,
    )
    install_signal_handlers(supervisor, log)
    server = None
    if config.http.enabled:
        try:
            server = HttpServer(config.http.listen, metrics, health)
        except OSError as exc:
            raise SourceError(f"http.listen {config.http.listen}: {exc.strerror}") from None
        server.start()
    log.info("starting", source=source.target, rules=len(config.rules), http=config.http.listen)
    try:
        return supervisor.run()
    finally:
        if server is not None:
            server.stop()
        log.info("stopped", confirmed_lsn=health.confirmed_lsn or None)


def _source(config: Config) -> ChangeSource:
    from invalidator.sources import source_for

    return source_for(config, compile_rules(config))


def cmd_setup(args: argparse.Namespace) -> int:
    print(_source(load_config(args.config)).setup())
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    print(_source(load_config(args.config)).teardown())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    record, usable = _source(load_config(args.config)).status()
    print(json.dumps(record))
    return 0 if usable else 1


def cmd_warm(args: argparse.Namespace) -> int:
    from invalidator.commands.warm import warm

    config = _load(args)
    if not config.warm:
        print("warm: no `warm:` entries in the configuration", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = warm(config, progress=progress)
    for r in results:
        print(
            f"{r.name}: {r.rows:,} rows, {r.written:,} keys written, {r.skipped:,} skipped, "
            f"{r.failed:,} failed in {r.seconds:.1f}s"
        )
    return 1 if any(r.failed for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invalidator",
        description="Keeps memcached honest: turns committed PostgreSQL changes (wal2json) "
        "into deletes of the right keys on the right memcached nodes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "replay",
        help="print (or --apply) the cache operations the rules plan for captured changes",
        description=(
            "Read captured changes and print one JSON object per planned operation ('-' is\n"
            "stdin). Never connects to PostgreSQL. The first line tells the formats apart:\n"
            "\n"
            "  wal2json: format-version 2 lines, as `pg_recvlogical -o format-version=2`\n"
            "            writes them, or format-version 1 documents;\n"
            "  pgoutput: one message per line, its LSN, one space, its bytes in hex ('#'\n"
            "            lines are comments), as this prints them (pg_recvlogical's binary\n"
            "            pgoutput output has no framing):\n"
            "            psql -At -F ' ' -c \"SELECT lsn, encode(data, 'hex') FROM\n"
            "              pg_logical_slot_peek_binary_changes('SLOT', NULL, NULL,\n"
            "              'proto_version', '1', 'publication_names', 'PUB')\" > FILE"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--apply",
        action="store_true",
        help="also perform the operations on the pools' memcached nodes",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "run",
        help="the daemon: stream changes and invalidate",
        description="Stream committed changes (a wal2json or pgoutput slot, or the notify "
        "outbox) and apply the rules' cache operations. On every connect the slot's "
        "continuity is checked; a gap is answered as source.on_gap says (flush, bump or "
        "refuse). SIGTERM/SIGINT: stop reading, finish in-flight work, confirm the last "
        "applied position, exit 0.",
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on shutdown, wait this long for in-flight work (default 5)",
    )
    p.set_defaults(func=cmd_run)

    for name, func, text in (
        (
            "setup",
            cmd_setup,
            "create the replication slot (pgoutput: and the publication of the rules' tables "
            "and columns, or bring it in step; notify: outbox and triggers)",
        ),
        (
            "teardown",
            cmd_teardown,
            "drop the replication slot (pgoutput: and the publication; notify: outbox and "
            "triggers)",
        ),
        (
            "status",
            cmd_status,
            "where the source stands: slot active, confirmed LSN, WAL retained, lag, continuity",
        ),
        ("warm", cmd_warm, "pre-populate keys from the `warm:` queries (the cache-warmer job)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", help=CONFIG_HELP)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "check",
        help="validate the configuration and rules",
        description="Validate config and rules. Exit 0 clean, 1 problems found, 2 unusable config.",
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--offline", action="store_true", help="do not contact PostgreSQL or memcached")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InvalidatorError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
