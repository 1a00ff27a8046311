"""``python -m workbench.gateway [--host H] [--port P]``: ``workbench gateway`` without the
rest of the command line (see :mod:`workbench.gateway.command`)."""

from __future__ import annotations

import argparse
import logging
import sys

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.gateway import command


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.gateway", description="the workbench's HTTP gateway"
    )
    command.add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("workbench").setLevel(logging.INFO)
    try:
        return command.run(Settings.from_env(), args)
    except WorkbenchError as exc:
        print(f"workbench gateway: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
