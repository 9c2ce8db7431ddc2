"""The ``tracelet`` command: questions about past runs, from the shell.

    tracelet list [--project P] [--status S] [--tag T] [--param K=V] [--json]
    tracelet show RUN [--json]
    tracelet compare RUN RUN [--metric M ...] [--json]
    tracelet anomalies RUN [--auto] [--kind K ...] [--json]
    tracelet plot RUN[,RUN...] METRIC... [--out FILE] [--smooth F]
    tracelet export RUN --format csv|json [--out FILE]
    tracelet sync [RUN] [--backend NAME ...] [--to NAME] [--option KEY=VALUE ...] [--timeout S]
    tracelet gc [--older-than DAYS] [--dry-run]

``--store PATH`` (before or after the command) picks the store; the default is the
``store_path`` setting (``./.tracelet``). A store copied from another machine (an offline
compute node) is read, and synced, where it lies. A mistake (unknown run or metric, empty
store, a store from a newer Tracelet) prints one line and exits 1; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from tracelet.exceptions import TraceletException
from tracelet.sync import DEFAULT_TIMEOUT as DEFAULT_SYNC_TIMEOUT

STORE_HELP = "the store folder (default: the store_path setting)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="tracelet", description="Ask about past runs.")
    parser.add_argument("--store", help=STORE_HELP)
    store = argparse.ArgumentParser(add_help=False)  # also after the command
    store.add_argument("--store", default=argparse.SUPPRESS, help=STORE_HELP)
    commands = _Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    commands.parents = [store]

    listing = commands.add_parser("list", help="list runs")
    listing.add_argument("--project")
    listing.add_argument("--status", choices=["running", "finished", "failed", "killed", "crashed"])
    listing.add_argument("--tag", help="NAME or NAME=VALUE")
    listing.add_argument("--param", help="NAME=VALUE")

    show = commands.add_parser("show", help="one run: status, metrics, params, anomalies")
    show.add_argument("run", help="run id, id prefix or name")

    compare = commands.add_parser("compare", help="two runs side by side")
    compare.add_argument("runs", nargs=2, metavar="RUN")
    compare.add_argument("--metric", action="append", dest="metrics", metavar="NAME")

    anomalies = commands.add_parser("anomalies", help="anomalies found in a run")
    anomalies.add_argument("run")
    anomalies.add_argument("--auto", action="store_true", help="detect now, and store them")
    anomalies.add_argument("--kind", action="append", dest="kinds", metavar="KIND")

    for command in (listing, show, compare, anomalies):
        command.add_argument("--json", action="store_true", help="print JSON (for scripts)")

    plot = commands.add_parser("plot", help="chart metrics of one or more runs (PNG)")
    plot.add_argument("run", help="run, or several separated by commas")
    plot.add_argument("metrics", nargs="+", metavar="METRIC")
    plot.add_argument("--out", help="the PNG to write (default: <run>-<metric>.png)")
    plot.add_argument("--smooth", type=float, default=0.0, help="EMA factor in [0, 1)")

    export = commands.add_parser("export", help="every point of a run as CSV or JSON")
    export.add_argument("run")
    export.add_argument("--format", choices=["csv", "json"], required=True)
    export.add_argument("--out", help="file to write (default: standard output)")

    sync = commands.add_parser("sync", help="deliver what backends missed (all runs, or RUN)")
    sync.add_argument("run", nargs="?", help="one run (default: every run with backlog)")
    sync.add_argument("--backend", action="append", dest="backends", metavar="NAME")
    sync.add_argument("--to", metavar="NAME", help="publish RUN into this backend, once")
    sync.add_argument(
        "--option",
        action="append",
        dest="options",
        metavar="KEY=VALUE",
        help="a backend option (tracking_uri=..., repeatable)",
    )
    sync.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_SYNC_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long, the whole command (default {DEFAULT_SYNC_TIMEOUT:g})",
    )

    gc = commands.add_parser("gc", help="remove runs older than retention_days")
    gc.add_argument("--older-than", type=float, metavar="DAYS", dest="days")
    gc.add_argument("--dry-run", action="store_true", help="only say what would go")
    gc.add_argument("--force", action="store_true", help="also runs a backend still lacks")
    return parser


class _Commands:
    """``add_parser`` of the subcommands, each also taking the shared ``parents``."""

    def __init__(self, subparsers: Any) -> None:
        self.subparsers = subparsers
        self.parents: list[argparse.ArgumentParser] = []

    def add_parser(self, name: str, **options: Any) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=self.parents, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    from tracelet.cli import commands

    try:
        return commands.run(args)
    except (TraceletException, ValueError, OSError) as error:
        print(f"tracelet: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
