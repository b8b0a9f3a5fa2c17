"""The HTTP side of `serve`: the Stripe ingress, health, metrics, and /mcp."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
