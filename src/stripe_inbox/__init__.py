"""stripe-inbox: Stripe webhooks as an inbox that an AI agent works through MCP."""

__version__ = "0.1.0"

from .app import create_app
from .errors import ConfigError, DeliveryRejected, InboxError, InvalidArgument, NotFound, StoreUnavailable
from .inbox import Inbox, open_inbox
from .mcp_server import create_mcp_server
from .settings import Settings, load_settings
from .store import Store, open_store

__all__ = [
    "ConfigError",
    "DeliveryRejected",
    "Inbox",
    "InboxError",
    "InvalidArgument",
    "NotFound",
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
