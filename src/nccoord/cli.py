"""The ``nccoord`` command line.

Each area of the library adds its own subcommands through a ``register``
function taking the argparse subparsers object; a subcommand sets ``func``
to a callable ``(args) -> int`` that returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import NccoordError

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from . import broker, dashboard, demo, event_cli, topics

    parser = argparse.ArgumentParser(
        prog="nccoord",
        description="Coordination for agents and services over Apache Kafka.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (broker, demo, event_cli, dashboard, topics):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    try:
        status: int = args.func(args)
    except NccoordError as exc:
        print(f"nccoord: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
