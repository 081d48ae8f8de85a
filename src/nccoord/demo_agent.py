"""One demo agent: an elector in its own OS process, reporting on stdout.

Started by ``nccoord demo``; it prints one JSON object per line (``ready``,
``elected``, ``revoked``) stamped with the system-wide monotonic clock, so
the demo can line up the reports of every agent. It exits when its standard
input closes (the demo ended) or when it is killed (the demo's point).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from .candidate import Timing
from .elector import Elector

logger = logging.getLogger(__name__)

_print_lock = threading.Lock()


def report(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "mono": time.monotonic(), **fields})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nccoord.demo_agent")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from .topics import TopicNames

    topics = TopicNames(args.prefix)
    elector = Elector.over_kafka(
        args.bootstrap,
        args.group,
        args.name,
        topics=topics,
        timing=Timing(lease=args.lease),
    )
    elector.on_elected(lambda term: report("elected", term=term))
    elector.on_revoked(lambda term, why: report("revoked", term=term, reason=why))
    elector.start()
    report("ready")
    sys.stdin.read()  # until the demo closes our input
    elector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
