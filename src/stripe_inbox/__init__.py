"""stripe-inbox: Stripe webhooks as an inbox that an AI agent works through MCP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DeliveryRejected, InboxError, InvalidArgument, NotFound, StoreUnavailable
from .inbox import Inbox, open_inbox
from .settings import Settings, load_settings
from .stores import Store, open_store

if TYPE_CHECKING:
    from .mcp.server import create_mcp_server
    from .runtime import Runtime
    from .web.app import create_app

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DeliveryRejected",
    "Inbox",
    "InboxError",
    "InvalidArgument",
    "NotFound",
    "Runtime",
    "Settings",
    "Store",
    "StoreUnavailable",
    "__version__",
    "create_app",
    "create_mcp_server",
    "load_settings",
    "open_inbox",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # The web and MCP stacks load on first use, so the CLI's quick commands start fast.
    if name == "create_app":
        from .web.app import create_app

        return create_app
    if name == "Runtime":
        from .runtime import Runtime

        return Runtime
    if name == "create_mcp_server":
        from .mcp.server import create_mcp_server

        return create_mcp_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
