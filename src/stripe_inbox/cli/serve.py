"""`serve` (the ingress, MCP over HTTP and the dashboard in one process) and `mcp` (MCP over stdio)."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import socket
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING

import anyio

from ..errors import ConfigError
from ..event_webhooks.callback import loopback_only
from ..inbox import open_inbox
from ..models import PRIORITIES
from ..settings import LOOPBACK_HOSTS, HttpLimits, Settings, generate_secret, store_secret
from ..stores import is_server_url
from .common import Commands, add_command, settings_of

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

LOG_POLL_SECONDS = 0.05


def add_serve(commands: Commands) -> None:
    serve = add_command(commands, "serve", run_serve, "run the webhook ingress and MCP over HTTP at /mcp")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")


def add_mcp(commands: Commands) -> None:
    mcp = add_command(commands, "mcp", run_mcp, "serve MCP over stdio (for Claude Desktop)")
    mcp.add_argument(
        "--channel",
        action="store_true",
        help="push new events into a Claude Code session (experimental capability claude/channel)",
    )
    mcp.add_argument("--channel-events", nargs="+", metavar="T", help="only these event type patterns (default *)")
    mcp.add_argument("--channel-min-priority", choices=PRIORITIES, help="only events of this priority or higher")


def run_serve(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    _check_exposure(args.host, settings)
    _ensure_webhook_secret(settings)
    sock = _listen(args.host, args.port)
    listener = _log_from_a_thread()
    try:
        anyio.run(_serve, settings, sock, backend_options={"use_uvloop": _has_uvloop()})
    finally:
        listener.stop()


def _check_exposure(host: str, settings: Settings) -> None:
    if host not in LOOPBACK_HOSTS and not settings.mcp_token:
        raise ConfigError(
            f"--host {host} would expose /mcp and the dashboard beyond this machine; set STRIPE_INBOX_TOKEN "
            "(or its older name STRIPE_INBOX_MCP_TOKEN) so MCP clients must present a bearer token and people sign in"
        )


def _ensure_webhook_secret(settings: Settings) -> None:
    if not settings.webhook_secrets and is_server_url(settings.db):
        raise ConfigError(
            "with a PostgreSQL inbox, every replica must check signatures with the same secret: set "
            "STRIPE_WEBHOOK_SECRET (the endpoint's whsec_… from `stripe-inbox register` or the Dashboard)"
        )
    if not settings.webhook_secrets:
        secret = generate_secret()
        store_secret(settings.secret_file, secret)
        print(
            f"No STRIPE_WEBHOOK_SECRET set: generated one and stored it in {settings.secret_file} (mode 0600).\n"
            f"  {secret}\n`stripe-inbox trigger` signs with it. It is shown only this once.",
            file=sys.stderr,
        )


async def _serve(settings: Settings, sock: socket.socket) -> None:
    import uvicorn

    from ..mcp.server import create_mcp_server
    from ..metrics import Metrics
    from ..web.app import create_app

    async with open_inbox(settings) as inbox:
        inbox.indexer.in_worker_process = True
        metrics = Metrics()
        mcp_server = create_mcp_server(inbox, metrics)
        host, port = sock.getsockname()[:2]
        mcp_server.webhooks.subscriptions.loopback_http = loopback_only(host, settings.public_url)
        app = create_app(inbox, mcp_server, metrics)
        server = uvicorn.Server(_uvicorn_config(app, settings.http))
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        # Everything built so far lives as long as the process: freezing it keeps the collector's full
        # passes from walking it, which otherwise stalls every in-flight delivery for a few hundred ms.
        gc.collect()
        gc.freeze()
        print(
            f"stripe-inbox listening on {url}  (webhooks: {url}/webhooks/stripe  MCP: {url}/mcp  dashboard: {url}/ui/)",
            file=sys.stderr,
            flush=True,
        )
        await server.serve(sockets=[sock])  # the app's lifespan runs the runtime, upkeep included


def _uvicorn_config(app: ASGIApp, limits: HttpLimits) -> uvicorn.Config:
    """uvicorn as `serve` runs it: no access log (the ingress logs each delivery), bounded connections, and each
    response in one write."""
    import uvicorn

    from ..web.http_limits import head_limited
    from ..web.single_write import SingleWriteResponses

    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=type("ServeProtocol", (head_limited(limits), SingleWriteResponses), {}),
        timeout_keep_alive=limits.keep_alive_seconds,  # type: ignore[arg-type]  # a float works as well
        limit_concurrency=limits.max_connections,
    )


def _log_from_a_thread() -> QueueListener:
    """Log lines are formatted and written by a thread of their own: a delivery's line costs the event loop only
    its record. The module-level switches are logging's documented ways to make a record cheaper."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    listener = PollingListener(queue := SimpleQueue(), *root.handlers)  # type: ignore[var-annotated]
    root.handlers = [HandOffHandler(queue)]
    listener.start()
    return listener


class PollingListener(QueueListener):
    """Looks for records every LOG_POLL_SECONDS instead of being woken by each one: a wake-up per
    delivery costs the event loop a thread switch and a fight for the GIL."""

    def dequeue(self, block: bool) -> logging.LogRecord:
        while True:
            try:
                return self.queue.get_nowait()  # type: ignore[no-any-return]
            except Empty:
                time.sleep(LOG_POLL_SECONDS)


class HandOffHandler(QueueHandler):
    """Queues the record as it is; the listener thread formats it (QueueHandler would format it here)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def _has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # Nagle's algorithm holds each response ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    return sock


def run_mcp(args: argparse.Namespace) -> None:
    from ..mcp.server import serve_stdio

    settings = settings_of(args)
    chosen = {"events": args.channel_events, "min_priority": args.channel_min_priority}
    try:
        push = settings.push.model_validate({**settings.push.model_dump(), **{k: v for k, v in chosen.items() if v}})
    except ValueError as error:
        raise ConfigError(f"--channel-events: {error}") from None
    settings = settings.model_copy(update={"push": push})

    async def run() -> None:
        async with open_inbox(settings) as inbox:
            inbox.indexer.in_worker_process = True
            await serve_stdio(inbox, channel=args.channel)

    anyio.run(run)
