"""Stripe's side: its signature scheme, its API (register an endpoint, backfill missed events), and the
realistic sample events `trigger` sends."""
