"""The ``invalidator`` command line (also ``python -m invalidator``).

Exit codes: 0 success, 1 runtime failure or problems found, 2 usage or config error.
User errors print one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from invalidator import __version__
from invalidator.commands.check import Finding, all_checks, listed, plural, preflight, summary
from invalidator.commands.replay import replay
from invalidator.config import Config, load_config
from invalidator.config.build import compile_rules
from invalidator.errors import ConfigError, InvalidatorError, SourceError
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
    source = args.config or "config"
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if args.format != "json":
            raise
        lines = redact(str(exc)).splitlines()
        _print_json({"config": source, "exit_code": exc.exit_code, "config_errors": lines})
        return exc.exit_code
    findings = listed(all_checks(config, offline=args.offline))
    totals = summary(findings)
    code = 1 if totals["errors"] else 0
    if args.format == "json":
        _print_json(
            {
                "config": source,
                "exit_code": code,
                "summary": totals,
                "checks": [f.record() for f in findings],
            }
        )
        return code
    print(f"checking {source}" + (" (offline: no database, no memcached)" if args.offline else ""))
    for finding in findings:
        print(redact(f"  {finding}"))
    print(
        f"{source}: {totals['checks']} checks: {totals['passed']} passed, "
        f"{plural(totals['errors'], 'error')}, {plural(totals['warnings'], 'warning')}"
    )
    return code


def _print_json(record: dict[str, object]) -> None:
    print(json.dumps(record, ensure_ascii=False, indent=2))


def _preflight(config: Config, source: str, lenient: bool, log: Any) -> list[Finding]:
    """``run``'s checks before streaming. Problems that make keys unbuildable or misplaced
    stop it (``ConfigError``: exit 2, the ✓/✗ list) unless ``lenient``; returns the ones
    it starts with. An unreachable database is left to the supervisor's retries."""
    findings = preflight(config)
    for finding in findings:
        if finding.check == "database" and finding.level == "error":
            log.warning("pre-flight checks not run", where=finding.where, error=finding.message)
    stopping = [f for f in findings if f.stops_run]
    if not stopping:
        return []
    if lenient:
        for finding in stopping:
            log.warning(
                "starting despite a failed check (--lenient)",
                where=finding.where,
                problem=finding.message,
            )
        return stopping
    raise ConfigError(
        "\n".join(
            [
                f"{source}: run refuses to start: {plural(len(stopping), 'problem')} would "
                "leave keys unbuilt or misplaced (fix them, or start anyway with --lenient)"
            ]
            + [f"  {finding}" for finding in listed(findings)]
        )
    )


def cmd_run(args: argparse.Namespace) -> int:
    from invalidator.runtime.http import HttpServer
    from invalidator.runtime.supervisor import Supervisor, install_signal_handlers
    from invalidator.sources.postgres import ValueQueries

    config = _load(args)
    log = get_logger()
    metrics = Metrics()
    health = Health()
    source = _source(config)
    problems = _preflight(config, args.config or "config", args.lenient, log)
    health.problems = tuple(str(p) for p in problems)
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
    # The bound address: with port 0 in http.listen, this is where the kernel put it.
    http = f"{config.http.listen.rsplit(':', 1)[0]}:{server.port}" if server else "off"
    log.info("starting", source=source.target, rules=len(config.rules), http=http)
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


def cmd_init(args: argparse.Namespace) -> int:
    from invalidator.commands.init import render
    from invalidator.config import SourceConfig
    from invalidator.config.env import EnvOverrides
    from invalidator.config.pools import split_servers
    from invalidator.core.placement.servers import parse_server, split_weight
    from invalidator.sources.catalog import Admin

    env = EnvOverrides.from_environ()
    dsn = args.dsn or (env.dsn.get_secret_value() if env.dsn is not None else None)
    if not dsn:
        raise ConfigError("init: give --dsn DSN or set INVALIDATOR_DSN")
    tables = [_table_name(t) for t in args.table]
    servers = split_servers(args.servers)
    for i, server in enumerate(servers):
        try:
            parse_server(split_weight(server)[0])
        except ValueError as exc:
            raise ConfigError(f"--servers[{i}]: {exc}") from None
    try:
        SourceConfig(kind=args.source, slot=args.slot)
    except ValueError:
        raise ConfigError(f"--slot {args.slot!r}: 1-63 characters of a-z, 0-9 and _") from None
    catalogue = Admin(dsn).catalogue(tables)
    missing = [t for t in tables if not catalogue.facts(*t).exists]
    if missing:
        raise ConfigError(
            "\n".join(
                f"--table {schema}.{table}: no such table (tables in {schema}: "
                f"{', '.join(catalogue.names.get(schema, ())) or 'none'})"
                for schema, table in missing
            )
        )
    sys.stdout.write(
        render(catalogue, tables, dsn=dsn, kind=args.source, servers=servers, slot=args.slot)
    )
    return 0


def _table_name(text: str) -> tuple[str, str]:
    """``users`` → (public, users); ``app.users`` → (app, users)."""
    schema, _, table = text.rpartition(".")
    return (schema or "public", table)


def _source_kinds() -> tuple[str, ...]:
    import typing

    from invalidator.config import SourceConfig

    return tuple(typing.get_args(SourceConfig.model_fields["kind"].annotation))


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
        "outbox) and apply the rules' cache operations. Before streaming it runs check's "
        "database checks: a table or column that does not exist, or a replica identity "
        "without a template's column, stops it with exit 2 and the list (--lenient starts "
        "anyway). On every connect the slot's continuity is checked; a gap is answered as "
        "source.on_gap says (flush, bump or refuse). With `audit:` in the config, the "
        "staleness probe of `invalidator audit` runs in a thread of its own and feeds the "
        "audit_* metrics. SIGTERM/SIGINT: stop reading, finish in-flight work, confirm the "
        "last applied position, exit 0.",
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on shutdown, wait this long for in-flight work (default 5)",
    )
    p.add_argument(
        "--lenient",
        action="store_true",
        help="start even when the pre-flight checks find keys that cannot be built or "
        "would be misplaced (unknown table or column, a replica identity without a "
        "template's column); /readyz lists them",
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
        "init",
        help="print a commented starting config for some tables, from the catalogue",
        description="Read the catalogue and print a commented YAML configuration: key "
        "templates from each table's primary key and unique indexes (user:{id}, "
        "user_by_email:{email}), the replica identity each needs (a template the old row "
        "cannot carry is written commented out, next to its ALTER TABLE), the source's "
        "setup steps and the role's SQL. The output passes `check` against the same "
        "database. A password in the DSN is never printed.",
    )
    p.add_argument(
        "--dsn",
        help="the application database, a role that may read the catalogue (default: "
        "$INVALIDATOR_DSN, which keeps the password off the command line)",
    )
    p.add_argument(
        "--table",
        action="append",
        required=True,
        metavar="[SCHEMA.]TABLE",
        help="a table to watch (repeat for more; schema public unless given)",
    )
    p.add_argument("--source", choices=_source_kinds(), default="wal2json", help="default wal2json")
    p.add_argument(
        "--servers",
        default="127.0.0.1:11211",
        help="the apps' memcached servers, comma-separated as in MEMCACHED_SERVERS "
        "(default 127.0.0.1:11211)",
    )
    p.add_argument("--slot", default="cache_invalidator", help="default cache_invalidator")
    p.set_defaults(func=cmd_init)

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
        help="validate the configuration and rules, against the database and memcached",
        description="List every check with its result (✓ what was looked at, ✗ error, ⚠ "
        "warning): the file, the database (connection, replication right, wal_level, slot, "
        "the wal2json plugin), each rule's table, each column its templates, when_changed "
        "and value.json name, the replica identity against each template on UPDATE/DELETE, "
        "and each memcached node. Exit 0 clean, 1 problems found, 2 unusable config.",
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--offline", action="store_true", help="do not contact PostgreSQL or memcached")
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one document for CI (config, exit_code, summary, checks[]; see README)",
    )
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
