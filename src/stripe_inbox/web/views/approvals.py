"""/ui/approvals: the notifications and tickets that wait for a person (a `confirm = true` channel or tracker),
each with its recipient, message and event; approve sends it at once, reject never. Each answer is audited as the
dashboard, through the same `Approvals` use case as `stripe-inbox approvals`."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ...approvals import Approvals
from ...errors import InboxError
from ...presenter import Presenter
from .kit import WAITING_STATE, PageKit


def approval_routes(approvals: Approvals, kit: PageKit, presenter: Presenter) -> list[Route]:
    def back(request: Request) -> Response:
        return RedirectResponse(f"{kit.prefix}/approvals", status_code=303)

    async def listing(request: Request) -> Response:
        waiting = [presenter.shown(approval) for approval in await approvals.waiting()]
        return kit.render(request, "approvals.html", {"title": "Approvals", "approvals": waiting})

    async def approve(request: Request, form: FormData) -> Response:
        approval_id = request.path_params["approval_id"]
        decided = await approvals.approve(approval_id, kit.actor)
        delivery = decided.notification.delivery if decided.notification else decided.ticket and decided.ticket.delivery
        status = delivery.status if delivery else decided.status
        because = f": {delivery.reason}" if delivery and delivery.reason and status != "sent" else ""
        kit.flash(request, f"Approved {approval_id} ({decided.target}): {status}{because}.", _kind(status))
        return back(request)

    async def reject(request: Request, form: FormData) -> Response:
        approval_id = request.path_params["approval_id"]
        decided = await approvals.reject(approval_id, kit.actor)
        kit.flash(request, f"Rejected {approval_id} ({decided.target}): nothing will be sent.", "info")
        return back(request)

    return [
        Route("/approvals", listing, methods=["GET"]),
        Route("/approvals/{approval_id:int}/approve", kit.action(approve, back), methods=["POST"]),
        Route("/approvals/{approval_id:int}/reject", kit.action(reject, back), methods=["POST"]),
    ]


def _kind(status: str) -> str:
    return {"sent": "ok", "failed": "error"}.get(status, "info")


def with_waiting_count(app: ASGIApp, approvals: Approvals, skip_header: bytes) -> ASGIApp:
    """Every page's GET learns how many approvals wait, for the navigation: one count query. The list's live
    refresh (`skip_header`), which redraws no navigation, and the static files do not pay for it."""

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        if _renders_a_page(scope, skip_header):
            try:
                waiting: int | None = await approvals.count_waiting()
            except InboxError:
                waiting = None  # the page itself says what is wrong with the inbox
            scope.setdefault("state", {})[WAITING_STATE] = waiting
        await app(scope, receive, send)

    return counted


def _renders_a_page(scope: Scope, skip_header: bytes) -> bool:
    if scope["type"] != "http" or scope["method"] != "GET" or "/static/" in scope["path"]:
        return False
    return all(name != skip_header for name, _ in scope["headers"])
