"""The HTTP side of `serve`: the Stripe ingress, health, metrics, /mcp, and the dashboard at /ui/."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
