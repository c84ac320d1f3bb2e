"""The ``invalidator`` command line (also ``python -m invalidator``).

Exit codes: 0 success, 1 runtime failure or problems found, 2 usage or config error.
User errors print one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from invalidator import __version__
from invalidator.commands.check import offline_findings, online_findings
from invalidator.commands.replay import replay
from invalidator.config import Config, load_config
from invalidator.config.build import compile_rules
from invalidator.errors import InvalidatorError, SourceError
from invalidator.redact import redact
from invalidator.runtime.audit import DEFAULT_RATE
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
    config = load_config(args.config)
    record, usable = _source(config).status()
    if any(pool.replicas for pool in config.pools.values()):
        from invalidator.sources.replicas import replica_status

        primary = config.source.dsn.get_secret_value() if config.source.dsn else None
        record["replicas"] = {
            name: [replica_status(dsn.get_secret_value(), primary) for dsn in pool.replicas]
            for name, pool in config.pools.items()
            if pool.replicas
        }
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


def cmd_audit(args: argparse.Namespace) -> int:
    from invalidator.commands.audit import audit, exit_code, print_json, print_text

    config = _load(args)
    tallies = audit(config, sample=args.sample, rate=args.rate, only=args.rule)
    (print_json if args.format == "json" else print_text)(tallies, sys.stdout)
    return exit_code(tallies)


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


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
        help="print (or --apply) the cache operations the rules plan for wal2json output",
        description="Read wal2json output (format-version 2 lines as `pg_recvlogical -o "
        "format-version=2` writes them, or format-version 1 documents; '-' is stdin) and "
        "print one JSON object per planned operation. Never connects to PostgreSQL.",
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
        description="Stream committed changes (wal2json slot, or the notify outbox) and apply "
        "the rules' cache operations. On every connect the slot's continuity is checked; a "
        "gap is answered as source.on_gap says (flush, bump or refuse). With `audit:` in the "
        "config, the staleness probe of `invalidator audit` runs in a thread of its own and "
        "feeds the audit_* metrics. SIGTERM/SIGINT: stop reading, finish in-flight work, "
        "confirm the last applied position, exit 0.",
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
        ("setup", cmd_setup, "create the replication slot (notify: outbox and triggers)"),
        ("teardown", cmd_teardown, "drop the replication slot (notify: outbox and triggers)"),
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
        "audit",
        help="measure staleness now: compare cached values with the rows they come from",
        description="Sample rows of the tables of every rule with a `value:` (refresh rules, or "
        "delete rules that say what the app stores), build their keys, read them from the "
        "owning nodes (fallback copies too) and compare each cached value with the value the "
        "row gives now (value.json: same bytes, or the same JSON document in other bytes, "
        "reported apart and never stale; value.query: the query's result). A stale-looking "
        "copy is read again, row and key, after a short delay, so a write racing the audit "
        "is not counted. Rows are read from the database the pool's apps read (its first "
        "`replicas` DSN, else the primary) with a statement timeout, at most --rate rows/s. "
        "Exit 0 nothing stale, 1 stale copies found (or a rule could not be read), 2 usage or "
        "config error.",
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument(
        "--sample",
        type=_positive(int),
        default=100,
        metavar="N",
        help="rows sampled per rule (random; default 100)",
    )
    p.add_argument("--rule", type=int, metavar="I", help="audit only rules[I] (0-based)")
    p.add_argument(
        "--rate",
        type=_positive(float),
        default=DEFAULT_RATE,
        metavar="R",
        help=f"at most R rows per second (default {DEFAULT_RATE:.0f}), so an audit never "
        "becomes load",
    )
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default), or one JSON object per rule and line",
    )
    p.set_defaults(func=cmd_audit)

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
