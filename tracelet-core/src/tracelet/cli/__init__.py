"""The ``tracelet`` command: questions about past runs, from the shell.

    tracelet list [--project P] [--status S] [--tag T] [--param K=V] [--json]
    tracelet show RUN [--json]
    tracelet compare RUN RUN [--metric METRIC ...] [--json]
    tracelet anomalies RUN [--auto] [--kind KIND ...] [--json]
    tracelet plot RUNS METRIC... [--out FILE] [--force] [--smooth F] [--logy]
    tracelet export RUN --format csv|json [--out FILE] [--force]
    tracelet sync [RUN] [--backend NAME ...] [--to NAME] [--option KEY=VALUE ...] [--timeout S]
    tracelet gc [--older-than DAYS] [--dry-run] [--force]
    tracelet ui [--host HOST] [--port N] [--allow-remote]

``--store PATH`` (before or after the command) picks the store; the default is the
``store_path`` setting (``./.tracelet``). A store copied from another machine (an offline
compute node) is read, and synced, where it lies. A mistake (unknown run or metric, empty
store, a store from a newer Tracelet, a missing optional package) prints one line and exits
1; never a traceback. A reader that goes away (``tracelet list --json | head -1``) ends the
command quietly with status 141, as it does other command-line tools.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tracelet.exceptions import TraceletException
from tracelet.sync import DEFAULT_TIMEOUT as DEFAULT_SYNC_TIMEOUT

STORE_HELP = "the store folder (default: the store_path setting)"
RUN_HELP = "a run: its id, a unique id prefix, or its name"
JSON_HELP = "print JSON (for scripts)"
FORCE_HELP = "replace FILE if it exists (without this, an existing file is an error)"
BROKEN_PIPE = 141
"""The exit status of a command whose reader went away (128 + SIGPIPE, as ``head`` leaves
``yes`` and other tools)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command.

    Each command is added by its own function; one that does not query the store sets its
    own ``handler`` (``parser.set_defaults(handler=function)``), which :func:`main` calls
    with the parsed arguments. Every option and argument has a help text.
    """
    parser = argparse.ArgumentParser(prog="tracelet", description="Ask about past runs.")
    parser.add_argument("--store", metavar="PATH", help=STORE_HELP)
    store = argparse.ArgumentParser(add_help=False)  # also after the command
    store.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS, help=STORE_HELP)
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND -h: how)"
    )
    commands = _Commands(subparsers, [store])
    for add in (_list, _show, _compare, _anomalies, _plot, _export, _sync, _gc, _ui):
        add(commands)
    return parser


def _list(commands: _Commands) -> None:
    listing = commands.add_parser("list", help="list runs, oldest first")
    listing.add_argument("--project", help="only runs of this project")
    listing.add_argument(
        "--status",
        choices=["running", "finished", "failed", "killed", "crashed"],
        help="only runs in this state",
    )
    listing.add_argument("--tag", metavar="NAME[=VALUE]", help="only runs with this tag")
    listing.add_argument(
        "--param", metavar="NAME=VALUE", help="only runs with this parameter value"
    )
    listing.add_argument("--json", action="store_true", help=JSON_HELP)


def _show(commands: _Commands) -> None:
    show = commands.add_parser("show", help="one run: status, metrics, params, anomalies")
    show.add_argument("run", metavar="RUN", help=RUN_HELP)
    show.add_argument("--json", action="store_true", help=JSON_HELP)


def _compare(commands: _Commands) -> None:
    compare = commands.add_parser("compare", help="two runs side by side")
    compare.add_argument("runs", nargs=2, metavar="RUN", help=f"{RUN_HELP} (two runs)")
    compare.add_argument(
        "--metric",
        action="append",
        dest="metrics",
        metavar="METRIC",
        help="compare this metric (repeatable; default: every metric both runs have)",
    )
    compare.add_argument("--json", action="store_true", help=JSON_HELP)


def _anomalies(commands: _Commands) -> None:
    anomalies = commands.add_parser("anomalies", help="anomalies found in a run")
    anomalies.add_argument("run", metavar="RUN", help=RUN_HELP)
    anomalies.add_argument("--auto", action="store_true", help="detect now, and store them")
    anomalies.add_argument(
        "--kind",
        action="append",
        dest="kinds",
        metavar="KIND",
        help="only this kind, e.g. loss_spike (repeatable)",
    )
    anomalies.add_argument("--json", action="store_true", help=JSON_HELP)


def _plot(commands: _Commands) -> None:
    plot = commands.add_parser("plot", help="chart metrics of one or more runs (PNG)")
    plot.add_argument("runs", metavar="RUNS", help="a run, or several separated by commas")
    plot.add_argument("metrics", nargs="+", metavar="METRIC", help="a metric to draw (one or more)")
    plot.add_argument(
        "--out", metavar="FILE", help="the PNG to write (default: RUN-METRIC[-METRIC...].png)"
    )
    plot.add_argument("-f", "--force", action="store_true", help=FORCE_HELP)
    plot.add_argument(
        "--smooth",
        type=float,
        default=0.0,
        metavar="FACTOR",
        help="exponential moving average factor in [0, 1) (default 0: none)",
    )
    plot.add_argument(
        "--logy", action="store_true", help="log y axis (values <= 0 are left out, and said so)"
    )


def _export(commands: _Commands) -> None:
    export = commands.add_parser("export", help="every point of a run as CSV or JSON")
    export.add_argument("run", metavar="RUN", help=RUN_HELP)
    export.add_argument("--format", choices=["csv", "json"], required=True, help="the format")
    export.add_argument("--out", metavar="FILE", help="file to write (default: standard output)")
    export.add_argument("-f", "--force", action="store_true", help=FORCE_HELP)


def _sync(commands: _Commands) -> None:
    sync = commands.add_parser("sync", help="deliver what backends missed (all runs, or RUN)")
    sync.add_argument("run", nargs="?", metavar="RUN", help="one run (default: every run)")
    sync.add_argument(
        "--backend",
        action="append",
        dest="backends",
        metavar="NAME",
        help="only this backend (repeatable; default: every backend of the run)",
    )
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


def _gc(commands: _Commands) -> None:
    gc = commands.add_parser("gc", help="remove runs older than retention_days")
    gc.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        dest="days",
        help="remove every run that ended more than DAYS ago (default: each run's own)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would go")
    gc.add_argument("--force", action="store_true", help="also runs a backend still lacks")


def _ui(commands: _Commands) -> None:
    ui = commands.add_parser("ui", help="serve a live dashboard of the store (a web page)")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address to serve on (default 127.0.0.1; another needs --allow-remote)",
    )
    ui.add_argument(
        "--port", type=int, default=8765, metavar="N", help="the port (default 8765; 0: any free)"
    )
    ui.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other machines reach (anyone there sees every run; no login)",
    )


class _Commands:
    """``add_parser`` of the subcommands, each also taking the shared ``parents``."""

    def __init__(self, subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
        self.subparsers = subparsers
        self.parents = parents

    def add_parser(self, name: str, **options: Any) -> argparse.ArgumentParser:
        """A subcommand ``name``, with ``--store`` also after it."""
        return self.subparsers.add_parser(name, parents=self.parents, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = getattr(args, "handler", _query)
    try:
        code = handler(args)
        sys.stdout.flush()  # a reader gone shows here, not at exit
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE
    except (TraceletException, ValueError, OSError) as error:
        print(f"tracelet: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _query(args: argparse.Namespace) -> int:
    """Run a command that asks the store (every one but those with their own ``handler``)."""
    from tracelet.cli import commands

    return commands.run(args)


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so Python's flush at exit finds no closed pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
