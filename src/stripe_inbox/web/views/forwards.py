"""The event page's forwarding actions: replay the event to a configured [[forward]] destination, and send a
failed forward again; both through the inbox's use cases (as `replay_event` and `events replay`), audited as the
dashboard. The serving process's forwarding loop makes the request."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...inbox import Inbox
from .kit import PageKit


def forward_routes(inbox: Inbox, kit: PageKit) -> list[Route]:
    async def replay(request: Request, form: FormData) -> Response:
        destination = str(form.get("destination", ""))
        (made,) = await inbox.replay([request.path_params["event_id"]], destination, kit.actor)
        kit.flash(request, f"Replay to {destination} queued as forward {made.id}.")
        return kit.back_to_event(request)

    async def retry(request: Request, form: FormData) -> Response:
        event_id, forward_id = request.path_params["event_id"], request.path_params["forward_id"]
        retried = await inbox.retry_forward(event_id, forward_id, kit.actor)
        kit.flash(request, f"Forward {forward_id} to {retried.destination} queued again.")
        return kit.back_to_event(request)

    return [
        Route("/events/{event_id}/replay", kit.action(replay), methods=["POST"]),
        Route("/events/{event_id}/forwards/{forward_id:int}/retry", kit.action(retry), methods=["POST"]),
    ]
