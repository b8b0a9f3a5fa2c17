"""What every dashboard view gets: render a page with the navigation's context, leave a message for the next
page, and turn a form handler into a state-changing endpoint (CSRF and origin checked, an inbox error shown on the
page it returns to)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ...errors import InboxError, StoreUnavailable
from ..auth import Access, Forbidden

FormHandler = Callable[[Request, FormData], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
Back = Callable[[Request], Response]  # where a refused action returns, with its message
WAITING_STATE = "approvals_waiting"  # request.state's name for the count the navigation shows


class PageKit:
    def __init__(self, prefix: str, actor: str, access: Access, templates: Jinja2Templates) -> None:
        self.prefix = prefix
        self.actor = actor  # who the audit trail says acted: the dashboard
        self.access = access
        self.templates = templates

    def render(self, request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        context.update(
            csrf_token=self.access.csrf_token(request),
            flash=request.session.pop("flash", None),
            can_sign_out=self.access.token_required and self.access.signed_in(request),
            approvals_waiting=getattr(request.state, WAITING_STATE, None),
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def fail(self, request: Request, status_code: int, title: str, message: str) -> Response:
        return self.render(request, "error.html", {"title": title, "message": message}, status_code)

    @staticmethod
    def flash(request: Request, text: str, kind: str = "ok") -> None:
        request.session["flash"] = {"kind": kind, "text": text}

    def back_to_event(self, request: Request) -> Response:
        return RedirectResponse(f"{self.prefix}/events/{quote(request.path_params['event_id'])}", status_code=303)

    def action(self, handler: FormHandler, back: Back | None = None) -> Endpoint:
        """A state-changing endpoint: its form proved to come from a dashboard page, and an inbox error
        becomes a message on the page it returns to (`back`, the event's page by default)."""

        async def endpoint(request: Request) -> Response:
            try:
                form = await self.access.checked_form(request)
            except Forbidden as refusal:
                return PlainTextResponse(f"403 Forbidden: {refusal}", status_code=403)
            try:
                return await handler(request, form)
            except InboxError as error:
                if isinstance(error, StoreUnavailable):
                    raise
                self.flash(request, str(error), "error")
                return (back or self.back_to_event)(request)

        return endpoint
