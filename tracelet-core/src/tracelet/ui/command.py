"""``tracelet ui``: serve the dashboard over the local store until Ctrl+C.

Binds 127.0.0.1 by default. Another address serves every run in the store to whoever
reaches it, so it needs ``--allow-remote`` and prints a warning.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from typing import Any

from tracelet.exceptions import ConfigurationError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_ui(engine: Any, args: argparse.Namespace) -> int:
    """``tracelet ui [--host H] [--port N] [--allow-remote]`` over ``engine``'s store."""
    host = args.host
    if not is_loopback(host) and not args.allow_remote:
        raise ConfigurationError(
            f"--host {host} would serve every run in the store to other machines; "
            "add --allow-remote if that is what you want"
        )
    try:
        import uvicorn

        from tracelet.ui.app import create_app
    except ImportError as error:
        raise ConfigurationError(
            f'tracelet ui needs {error.name}: pip install "tracelet-core[ui]"'
        ) from None
    store_path = engine.store.path
    engine.close()  # the dashboard reads through its own read-only connections
    with _listen(host, args.port) as listener:
        hosts = None if args.allow_remote else loopback_hosts(host)
        app = create_app(store_path, allowed_hosts=hosts)
        if not is_loopback(host):
            print(
                f"tracelet ui: warning: serving {store_path} on {host}, reachable from other "
                "machines, without authentication",
                file=sys.stderr,
            )
        port = listener.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        print(f"tracelet ui: http://{shown}:{port}/ (store {store_path}); Ctrl+C stops", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        server.run(sockets=[listener])
    return 0


def loopback_hosts(host: str) -> list[str]:
    """The ``Host`` headers a server on loopback ``host`` answers (a page elsewhere that
    points its own name at 127.0.0.1, DNS rebinding, sends another)."""
    return sorted({host, *LOOPBACK_NAMES, "[::1]"})


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: any free one), or an OSError that
    names the address."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        return socket.create_server(address[:2], family=family)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
