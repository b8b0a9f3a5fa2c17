"""The MCP face of the inbox: resources, tools and prompts over stdio (`mcp`) and Streamable HTTP (`serve`)."""

from __future__ import annotations

from .server import InboxServer, create_mcp_server, serve_stdio

__all__ = ["InboxServer", "create_mcp_server", "serve_stdio"]
