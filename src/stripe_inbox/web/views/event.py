"""/ui/events/{id}: one event as the presenter shows it (masked, or revealed where the policy allows and the
operator asked, which the audit trail records), with its timeline, and the actions MCP and the CLI have: ack,
classify, retry a delivery. Each through the inbox's use cases, audited as the dashboard."""

from __future__ import annotations

import json

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import NotFound
from ...inbox import Inbox
from ...models import OUTCOMES
from ...presenter import Presenter
from .kit import PageKit
from .templating import clock


class EventPages:
    def __init__(self, inbox: Inbox, presenter: Presenter, kit: PageKit) -> None:
        self.inbox = inbox
        self.presenter = presenter
        self.kit = kit
        self.may_reveal = presenter.masks and inbox.settings.dashboard_reveal

    def routes(self) -> list[Route]:
        action = self.kit.action
        return [
            Route("/events/{event_id}", self.show, methods=["GET"]),
            Route("/events/{event_id}/ack", action(self.ack), methods=["POST"]),
            Route("/events/{event_id}/classify", action(self.classify), methods=["POST"]),
            Route("/events/{event_id}/reveal", action(self.reveal), methods=["POST"]),
            Route("/events/{event_id}/retry/{kind:str}/{ref_id:int}", action(self.retry), methods=["POST"]),
        ]

    async def show(self, request: Request, reveal: bool = False) -> Response:
        event_id = request.path_params["event_id"]
        try:
            detail = await self.inbox.get_event(event_id)
        except NotFound as error:
            return self.kit.fail(request, 404, "No such event", str(error))
        stored = await self.inbox.event(event_id)
        (summary,) = await self.inbox.summaries([stored])  # with what resolved it
        timeline = None if stored.object_id is None else (await self.inbox.timeline(stored.object_id)).events
        view = self.presenter.event(detail, stored, summary, timeline, reveal)
        shown = view.detail
        context = {
            "title": f"{shown.type} {shown.id}",
            "detail": shown,
            "summary": view.summary,
            "suggestion": view.suggestion,
            "timeline": view.timeline,
            "payload": json.dumps(shown.event, indent=2, ensure_ascii=False),
            "full_event": shown.full_event and json.dumps(shown.full_event, indent=2, ensure_ascii=False),
            "masked": view.masked,
            "can_reveal": self.may_reveal and not reveal,
            "revealed": view.revealed,
            "outcomes": OUTCOMES,
            "destinations": [destination.name for destination in self.inbox.settings.forward],
        }
        return self.kit.render(request, "event.html", context)

    async def ack(self, request: Request, form: FormData) -> Response:
        note = str(form.get("note", "")).strip() or None
        result = await self.inbox.ack(
            request.path_params["event_id"], str(form.get("outcome", "")), note, self.kit.actor
        )
        if result.already_acked:
            text = f"Already acked ({result.outcome}) at {clock(result.acked_at)}: nothing changed."
            self.kit.flash(request, text, "info")
        else:
            self.kit.flash(request, f"Acked as {result.outcome}{f' with the note “{note}”' if note else ''}.")
        return self.kit.back_to_event(request)

    async def classify(self, request: Request, form: FormData) -> Response:
        result = await self.inbox.classify(request.path_params["event_id"], self.kit.actor)
        self.kit.flash(request, f"Classified as {result.category}, priority {result.priority}: {result.summary}")
        return self.kit.back_to_event(request)

    async def retry(self, request: Request, form: FormData) -> Response:
        kind, ref_id = request.path_params["kind"], request.path_params["ref_id"]
        state = await self.inbox.retry_delivery(kind, ref_id, self.kit.actor)
        because = f": {state.reason}" if state.reason and state.status != "sent" else ""
        kind_of_message = "ok" if state.status == "sent" else "info"
        self.kit.flash(request, f"Retried {kind} {ref_id}: {state.status}{because}.", kind_of_message)
        return self.kit.back_to_event(request)

    async def reveal(self, request: Request, form: FormData) -> Response:
        if not self.may_reveal:
            message = "the policy does not let the dashboard reveal personal data"
            return self.kit.fail(request, 403, "Not allowed", message)
        await self.inbox.record_reveal(request.path_params["event_id"], self.kit.actor)
        return await self.show(request, reveal=True)
