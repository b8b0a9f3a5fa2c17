"""OAuth for remote MCP clients: `/mcp` as a protected resource, `serve` as its authorization server, and the
scopes a token carries."""
