"""``nccoord dashboard``: the cluster's health in a browser, live, read-only.

A Starlette app served by uvicorn on 127.0.0.1 only. It follows the system
topics with a :class:`~nccoord.monitor.ClusterFollower` and serves

- ``/``: one self-contained page (no external scripts or styles) that draws
  groups, agents, overrides in force, consensus results and role changes;
- ``/api/snapshot``: the current snapshot as JSON;
- ``/api/stream``: the same as server-sent events, one snapshot every
  ``interval`` seconds, which the page listens to (the browser reconnects by
  itself after a drop);
- ``/metrics``: the Prometheus series of the follower.

The page has no controls: it reads and writes nothing to the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .topics import TopicNames

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from .metrics import Metrics
    from .monitor import ClusterFollower, Snapshot

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


def create_app(
    follower: ClusterFollower, metrics: Metrics | None = None, interval: float = 0.5
) -> Starlette:
    """The dashboard's ASGI app over a started follower."""
    from starlette.applications import Starlette
    from starlette.responses import (
        HTMLResponse,
        JSONResponse,
        Response,
        StreamingResponse,
    )
    from starlette.routing import Route

    from .metrics import CONTENT_TYPE

    page = resources.files("nccoord").joinpath("dashboard.html").read_text()

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def snapshot(request: Request) -> Response:
        return JSONResponse(follower.snapshot().to_json())

    async def stream(request: Request) -> Response:
        return StreamingResponse(
            _events(request, follower, interval),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def scrape(request: Request) -> Response:
        body = metrics.exposition() if metrics is not None else b""
        return Response(body, media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/snapshot", snapshot),
            Route("/api/stream", stream),
            Route("/metrics", scrape),
        ]
    )


async def _events(
    request: Request, follower: ClusterFollower, interval: float
) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    while not await request.is_disconnected():
        yield f"data: {snapshot_json(follower.snapshot())}\n\n"
        await asyncio.sleep(interval)


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"port {port} on {HOST} is taken ({exc.strerror}): pass another "
            "--port, or --port 0 for a free one"
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    bootstrap: str,
    *,
    port: int = 8765,
    names: TopicNames | None = None,
    client_config: dict[str, Any] | None = None,
    announce: Any = None,
) -> None:
    """Follow the cluster and serve the dashboard until interrupted."""
    import uvicorn

    from .metrics import Metrics
    from .monitor import ClusterFollower, ClusterView, FollowerSettings

    sock = bind(port)
    metrics = Metrics()
    settings = FollowerSettings(names=names or TopicNames())
    if client_config:
        settings.client_config = client_config
    follower = ClusterFollower(bootstrap, ClusterView(metrics=metrics), settings)
    follower.start()
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    (announce or print)(url)
    config = uvicorn.Config(
        create_app(follower, metrics),
        log_level="warning",
        timeout_graceful_shutdown=1,
        lifespan="off",
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        follower.close()
        sock.close()


# -- command line -----------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve a live, read-only health page on 127.0.0.1",
        description="Follow the system topics and serve a page that shows who "
        "leads each group, which agents are alive, the overrides in force and "
        "the latest consensus results, updated live. Also serves /metrics.",
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("NCCOORD_BOOTSTRAP"),
        help="host:port of a broker (default: $NCCOORD_BOOTSTRAP)",
    )
    parser.add_argument("--prefix", default="", help="prefix of the topic names")
    parser.add_argument(
        "--port", type=int, default=8765, help="port on 127.0.0.1 (0: a free one)"
    )
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    from .connect import check_bootstrap

    require_extra("ui", "starlette", "uvicorn", "prometheus_client")
    if not args.bootstrap:
        raise ConfigError("no broker: pass --bootstrap or set NCCOORD_BOOTSTRAP")
    check_bootstrap(args.bootstrap)

    def announce(url: str) -> None:
        print(url, flush=True)
        print(f"dashboard at {url} (Ctrl-C stops it)", file=sys.stderr, flush=True)

    serve(
        args.bootstrap,
        port=args.port,
        names=TopicNames(args.prefix),
        announce=announce,
    )
    return 0


def require_extra(extra: str, *modules: str) -> None:
    """Raise a one-line ConfigError naming the extra if a module is missing."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not installed: pip install 'nccoord[{extra}]'"
        )


def snapshot_json(snapshot: Snapshot) -> str:
    """A snapshot as the stream sends it."""
    return json.dumps(snapshot.to_json(), separators=(",", ":"))
