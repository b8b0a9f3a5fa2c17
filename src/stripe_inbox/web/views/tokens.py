"""/ui/tokens: the OAuth tokens issued to MCP clients (never a token's value: the store keeps digests only), and
revoking one, which ends its client's whole grant, audited as the dashboard."""

from __future__ import annotations

import time

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...inbox import Inbox
from .kit import PageKit


def token_routes(inbox: Inbox, kit: PageKit) -> list[Route]:
    def back(request: Request) -> Response:
        return RedirectResponse(f"{kit.prefix}/tokens", status_code=303)

    async def listing(request: Request) -> Response:
        now = time.time()
        every = request.query_params.get("all") == "1"
        tokens = await inbox.store.oauth_tokens(None if every else now)
        rows = [(token, token.state(now)) for token in tokens]
        return kit.render(request, "tokens.html", {"title": "Tokens", "rows": rows, "every": every})

    async def revoke(request: Request, form: FormData) -> Response:
        token_id = request.path_params["token_id"]
        revoked = await inbox.revoke_token(token_id, kit.actor)
        ended = f"{revoked} usable token{'' if revoked == 1 else 's'}"
        kit.flash(request, f"Revoked {token_id}: {ended} of its grant ended.")
        return back(request)

    return [
        Route("/tokens", listing, methods=["GET"]),
        Route("/tokens/{token_id}/revoke", kit.action(revoke, back), methods=["POST"]),
    ]
