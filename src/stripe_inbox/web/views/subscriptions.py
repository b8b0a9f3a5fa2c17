"""/ui/subscriptions: the MCP Events webhook subscriptions clients made (never a secret: the store keeps it
sealed), and revoking one, which tells its callback once and is audited as the dashboard."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...event_webhooks.subscriptions import WebhookSubscriptions
from ...inbox import Inbox
from .kit import PageKit


def subscription_routes(inbox: Inbox, kit: PageKit) -> list[Route]:
    def back(request: Request) -> Response:
        return RedirectResponse(f"{kit.prefix}/subscriptions", status_code=303)

    async def listing(request: Request) -> Response:
        every = request.query_params.get("all") == "1"
        found = await inbox.store.subscriptions(ended=every)
        return kit.render(request, "subscriptions.html", {"title": "Subscriptions", "rows": found, "every": every})

    async def revoke(request: Request, form: FormData) -> Response:
        subscription_id = request.path_params["subscription_id"]
        ended = await WebhookSubscriptions(inbox, loopback_http=False).revoke(subscription_id, kit.actor)
        kit.flash(request, f"Revoked {ended.id}: {ended.url} is told once and gets no more events.")
        return back(request)

    return [
        Route("/subscriptions", listing, methods=["GET"]),
        Route("/subscriptions/{subscription_id}/revoke", kit.action(revoke, back), methods=["POST"]),
    ]
