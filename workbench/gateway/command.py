"""The ``gateway`` command's arguments and body, shared by ``workbench gateway`` and
``python -m workbench.gateway``; the latter loads the gateway alone (about 90 MB resident
instead of 160: no processor, no compiled kernels), which is what compose runs."""

from __future__ import annotations

import argparse
import json

from workbench.config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default WORKBENCH_GATEWAY_HOST)")
    p.add_argument(
        "--port", type=int, help="port (default WORKBENCH_GATEWAY_PORT, 8000; 0: a free one)"
    )
    p.add_argument(
        "--run-id", help="run id of readings whose request names none in X-Run-Id (default new)"
    )
    gw = p.add_subparsers(dest="gateway_command", metavar="key")
    k = gw.add_parser(
        "key", help="make an API key: its hash goes to the keys file, the key is printed once"
    )
    k.add_argument("name", help="a name for the key (logs, metrics)")
    k.add_argument(
        "--machines", help="comma-separated machine ids the key may send for (default: any)"
    )
    k.add_argument("--json", action="store_true", help='print {"name", "key", "file"}')


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the gateway until interrupted, or (``key NAME``) make a key and print it."""
    from workbench.gateway import keys, server
    from workbench.runs import new_run_id

    if args.gateway_command == "key":
        machines = [m.strip() for m in (args.machines or "").split(",") if m.strip()]
        path = settings.gateway_keys_path
        key = keys.add_key(path, args.name, machines or None)
        made = {"name": args.name, "key": key, "file": str(path), "machines": machines or None}
        said = f"{key}\n(the key for {args.name!r}: shown only now; its hash is in {path})"
        print(json.dumps(made) if args.json else said)
        return 0
    gateway = server.prepare_gateway(settings, args.run_id or new_run_id())
    port = settings.gateway_port if args.port is None else args.port
    gateway.serve(args.host or settings.gateway_host, port)
    return 0
