"""The ``invalidator`` command line (also ``python -m invalidator``).

Exit codes: 0 success, 1 runtime failure or problems found, 2 usage or config error.
User errors print one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .check import offline_findings
from .config import Config, load_config
from .errors import InvalidatorError
from .logs import configure, get_logger
from .redact import redact
from .replay import replay

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
        print(
            "check: online checks (database, memcached) arrive with `invalidator run`; "
            "run with --offline",
            file=sys.stderr,
        )
        return 2
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
