"""What a dashboard page module gets from the dashboard: render a page, leave a message for the next one, and
turn a form handler into a state-changing endpoint (CSRF and origin checked, an inbox error shown on the page it
returns to). Each area's pages (approvals, tokens, forwards) are routes built over it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

FormHandler = Callable[[Request, FormData], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
Back = Callable[[Request], Response]  # where a refused action returns, with its message


@dataclass(frozen=True, slots=True)
class PageKit:
    prefix: str
    actor: str  # who the audit trail says acted: the dashboard
    render: Callable[..., Response]  # (request, template, context, status_code=200)
    flash: Callable[..., None]  # (request, text, kind="ok")
    action: Callable[[FormHandler, Back], Endpoint]
