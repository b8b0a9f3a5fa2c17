"""The operator's dashboard under /ui/: the inbox at a glance, each event with what was done about it, and the
actions MCP and the CLI have, through the same `Inbox` methods, audited as `dashboard`. Pages are rendered on
the server and read without JavaScript; a small script only refreshes the list when the inbox changes."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InboxError, NotFound, StoreUnavailable
from ..inbox import Inbox
from ..models import OUTCOMES, Classification, EventSummary
from ..redact import Redactor
from .approvals_page import WAITING_STATE, approval_routes, with_waiting_count
from .auth import Access, Forbidden, Guard
from .chart import ReceivedPerHour, hourly_chart
from .filters import FilterField, Search, supported_filters
from .forward_actions import forward_routes
from .page_kit import PageKit
from .session import DashboardSessions
from .throttle import SignInThrottle
from .tokens_page import token_routes

ACTOR = "dashboard"
PAGE_SIZE = 25  # a screenful; with 50, rendering and classifying the rows took most of a page's time
HERE = Path(__file__).parent
LIVE_HEADER = "x-inbox-live"  # the list's script asks with the change marker it has; 204 when nothing changed
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


# Looked up once: asking a pydantic model for a field it lacks costs an exception per row.
SUMMARY_MARKS = tuple(name for name in ("superseded_by", "stale") if name in EventSummary.model_fields)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a list: the event's summary and its classification, stored or (not yet stored) as the
    policy would make it."""

    summary: EventSummary
    classification: Classification | None
    classified: bool
    superseded_by: str | None = None  # where the inbox tells (search): a later event that resolves this one
    stale: bool = False  # where the inbox tells: a newer event about the same object is already stored


@dataclass(frozen=True, slots=True)
class ListView:
    title: str
    fixed: Mapping[str, str]  # filters the page's path sets: not in the form
    defaults: Mapping[str, str]
    overview: bool  # counts and chart: the inbox page only
    notice: str | None = None


def create_dashboard(
    inbox: Inbox,
    prefix: str = "/ui",
    sessions: DashboardSessions | None = None,
    throttle: SignInThrottle | None = None,
) -> ASGIApp:
    """The dashboard's ASGI app, to be mounted at `prefix`; `sessions` and `throttle` are shared with any other
    page that signs the operator in."""
    settings = inbox.settings
    access = Access(settings.mcp_token, prefix, sessions)
    throttle = throttle or SignInThrottle()
    redactor = Redactor(settings.redact)
    filters = supported_filters(inbox.list_events)
    templates = Jinja2Templates(env=_environment(prefix))
    received_per_hour = ReceivedPerHour(inbox.store)

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        context.update(
            csrf_token=access.csrf_token(request),
            flash=request.session.pop("flash", None),
            can_sign_out=access.token_required and access.signed_in(request),
            approvals_waiting=getattr(request.state, WAITING_STATE, None),
        )
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def flash(request: Request, text: str, kind: str = "ok") -> None:
        request.session["flash"] = {"kind": kind, "text": text}

    def fail(request: Request, status_code: int, title: str, message: str) -> Response:
        return page(request, "error.html", {"title": title, "message": message}, status_code)

    # -- lists -----------------------------------------------------------------------------------

    async def rows_of(summaries: list[EventSummary]) -> list[Row]:
        stored = {event.id: event for event in await inbox.store.get_events([s.id for s in summaries])}
        rows = []
        for summary in summaries:
            event = stored.get(summary.id)
            classification = event.stored_classification() if event else None
            classified = classification is not None
            if classification is None and event is not None:
                classification = inbox.triage(event, summary.superseded_by)
            marks = {name: getattr(summary, name) for name in SUMMARY_MARKS}
            redacted = classification and redactor.model(classification)
            rows.append(Row(redactor.model(summary), redacted, classified, **marks))
        return rows

    async def live_context(request: Request, view: ListView, search: Search) -> dict[str, Any]:
        marker = await inbox.store.change_marker()  # before the reads: a change made during them moves it on
        cursor = request.query_params.get("cursor") or None
        listed = await inbox.list_events(**search.arguments, limit=PAGE_SIZE, cursor=cursor)
        context: dict[str, Any] = {
            "marker": marker,
            "page": listed,
            "rows": await rows_of(listed.events),
            "overview": view.overview,
            "first_url": _url(request.url.path, search.values, view.fixed),
            "next_url": listed.next_cursor
            and _url(request.url.path, {**search.values, "cursor": listed.next_cursor}, view.fixed),
            "on_later_page": cursor is not None,
        }
        if view.overview:
            now = time.time()
            context["stats"] = await inbox.stats()
            context["chart"] = hourly_chart(await received_per_hour.counts(now), now)
        return context

    async def listing(request: Request, view: ListView) -> Response:
        form_fields = [field for field in filters if field.name not in view.fixed]
        try:
            search = Search.from_query(filters, {**request.query_params, **view.fixed}, view.defaults)
            if LIVE_HEADER in request.headers:
                if request.headers[LIVE_HEADER] == str(await inbox.store.change_marker()):
                    return Response(status_code=204)
                context = await live_context(request, view, search)
                response = templates.TemplateResponse(request, "_live.html", context)
                response.headers["x-inbox-marker"] = str(context["marker"])
                return response
            context = await live_context(request, view, search)
        except InboxError as error:
            if isinstance(error, StoreUnavailable):
                raise
            if LIVE_HEADER in request.headers:
                return Response(status_code=204)  # the page itself says what is wrong
            values = {field.name: request.query_params.get(field.name, "") for field in form_fields}
            context = {"title": view.title, "fields": form_fields, "values": values, "error": str(error)}
            return page(request, "list.html", {**context, "rows": None, "view": view}, 400)
        return page(
            request,
            "list.html",
            {**context, "title": view.title, "fields": form_fields, "values": search.values, "view": view},
        )

    async def inbox_page(request: Request) -> Response:
        return await listing(request, ListView("Inbox", {}, {"status": "pending"}, overview=True))

    async def customer_page(request: Request) -> Response:
        customer = request.path_params["customer_id"]
        return await listing(
            request, ListView(f"Customer {customer}", {"customer": customer}, {"status": "all"}, False)
        )

    async def object_page(request: Request) -> Response:
        object_id = request.path_params["object_id"]
        if "object_id" in {field.name for field in filters}:
            view = ListView(f"Object {object_id}", {"object_id": object_id}, {"status": "all"}, False)
            return await listing(request, view)
        notice = "this inbox cannot list events by object yet: search by object comes with the search filters"
        return page(request, "error.html", {"title": f"Object {object_id}", "message": notice}, 501)

    # -- one event -------------------------------------------------------------------------------

    async def event_page(request: Request, reveal: bool = False) -> Response:
        event_id = request.path_params["event_id"]
        try:
            detail = await inbox.get_event(event_id)
        except NotFound as error:
            return fail(request, 404, "No such event", str(error))
        stored = await inbox.event(event_id)
        suggestion = None if detail.classification else (await inbox.assess([stored]))[0]
        timeline = await _timeline(inbox, stored.object_id)
        if not reveal:
            detail = redactor.model(detail)
            suggestion = suggestion and redactor.model(suggestion)
            timeline = timeline and [redactor.model(entry) for entry in timeline]
        context = {
            "title": f"{detail.type} {detail.id}",
            "detail": detail,
            "summary": redactor.model(stored.summary()),
            "suggestion": suggestion,
            "timeline": timeline,
            "payload": json.dumps(detail.event, indent=2, ensure_ascii=False),
            "full_event": detail.full_event and json.dumps(detail.full_event, indent=2, ensure_ascii=False),
            "masked": bool(redactor.kinds) and not reveal,
            "can_reveal": bool(redactor.kinds) and settings.dashboard_reveal and not reveal,
            "revealed": reveal,
            "outcomes": OUTCOMES,
            "destinations": [destination.name for destination in settings.forward],
        }
        return page(request, "event.html", context)

    def action(
        handler: Callable[[Request, FormData], Awaitable[Response]], back: Callable[[Request], Response] | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing endpoint: its form proved to come from a dashboard page, and an inbox error
        becomes a message on the page it returns to (`back`, the event's page by default)."""

        async def endpoint(request: Request) -> Response:
            try:
                form = await access.checked_form(request)
            except Forbidden as refusal:
                return PlainTextResponse(f"403 Forbidden: {refusal}", status_code=403)
            try:
                return await handler(request, form)
            except InboxError as error:
                if isinstance(error, StoreUnavailable):
                    raise
                flash(request, str(error), "error")
                return (back or back_to_event)(request)

        return endpoint

    def back_to_event(request: Request) -> Response:
        return RedirectResponse(f"{prefix}/events/{quote(request.path_params['event_id'])}", status_code=303)

    async def ack(request: Request, form: FormData) -> Response:
        note = str(form.get("note", "")).strip() or None
        result = await inbox.ack(request.path_params["event_id"], str(form.get("outcome", "")), note, ACTOR)
        if result.already_acked:
            flash(request, f"Already acked ({result.outcome}) at {_clock(result.acked_at)}: nothing changed.", "info")
        else:
            flash(request, f"Acked as {result.outcome}{f' with the note “{note}”' if note else ''}.")
        return back_to_event(request)

    async def classify(request: Request, form: FormData) -> Response:
        result = await inbox.classify(request.path_params["event_id"], ACTOR)
        flash(request, f"Classified as {result.category}, priority {result.priority}: {result.summary}")
        return back_to_event(request)

    async def retry(request: Request, form: FormData) -> Response:
        kind, ref_id = request.path_params["kind"], request.path_params["ref_id"]
        state = await inbox.retry_delivery(kind, ref_id, ACTOR)
        because = f": {state.reason}" if state.reason and state.status != "sent" else ""
        flash(request, f"Retried {kind} {ref_id}: {state.status}{because}.", "ok" if state.status == "sent" else "info")
        return back_to_event(request)

    async def reveal(request: Request, form: FormData) -> Response:
        if not (redactor.kinds and settings.dashboard_reveal):
            return fail(request, 403, "Not allowed", "the policy does not let the dashboard reveal personal data")
        await inbox.record_reveal(request.path_params["event_id"], ACTOR)
        return await event_page(request, reveal=True)

    # -- signing in ------------------------------------------------------------------------------

    async def sign_in_form(request: Request) -> Response:
        if not access.token_required:
            return RedirectResponse(f"{prefix}/", status_code=303)
        return page(
            request, "sign_in.html", {"title": "Sign in", "next": access.safe_next(request.query_params.get("next"))}
        )

    async def sign_in(request: Request, form: FormData) -> Response:
        target = access.safe_next(form.get("next"))
        address = request.client.host if request.client else "unknown"
        if wait := throttle.wait_seconds(address):
            error = f"Too many failed attempts from your address: try again in {wait} s."
            response = page(request, "sign_in.html", {"title": "Sign in", "next": target, "error": error}, 429)
            response.headers["retry-after"] = str(wait)
            return response
        if access.accepts_token(str(form.get("token", ""))):
            throttle.succeeded(address)
            access.sign_in(request)
            return RedirectResponse(target, status_code=303)
        throttle.failed(address)
        context = {"title": "Sign in", "next": target, "error": "That is not the access token."}
        return page(request, "sign_in.html", context, 401)

    async def sign_out(request: Request, form: FormData) -> Response:
        await access.sign_out(request)
        return RedirectResponse(access.sign_in_path if access.token_required else f"{prefix}/", status_code=303)

    async def unavailable(request: Request, error: Exception) -> Response:
        return fail(request, 503, "The inbox is unavailable", str(error))

    approvals = inbox.approvals
    kit = PageKit(prefix, ACTOR, page, flash, action)
    routes = [
        *approval_routes(approvals, kit, redactor),
        *token_routes(inbox, kit),
        *forward_routes(inbox, kit),
        Route("/", inbox_page, methods=["GET"]),
        Route("/events/{event_id}", event_page, methods=["GET"]),
        Route("/events/{event_id}/ack", action(ack), methods=["POST"]),
        Route("/events/{event_id}/classify", action(classify), methods=["POST"]),
        Route("/events/{event_id}/reveal", action(reveal), methods=["POST"]),
        Route("/events/{event_id}/retry/{kind:str}/{ref_id:int}", action(retry), methods=["POST"]),
        Route("/customers/{customer_id}", customer_page, methods=["GET"]),
        Route("/objects/{object_id}", object_page, methods=["GET"]),
        Route("/sign-in", sign_in_form, methods=["GET"]),
        Route("/sign-in", action(sign_in), methods=["POST"]),
        Route("/sign-out", action(sign_out), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static")),
    ]
    app = Starlette(routes=routes, exception_handlers={StoreUnavailable: unavailable})
    counted = with_waiting_count(app, approvals, LIVE_HEADER.encode())
    guarded = Guard(counted, access, open_paths=(access.sign_in_path, f"{prefix}/static/"))
    return _with_page_headers(access.sessions.middleware(guarded, path=prefix))


async def _timeline(inbox: Inbox, object_id: str | None) -> list[EventSummary] | None:
    """Every event about the event's object."""
    return None if object_id is None else (await inbox.timeline(object_id)).events


def _url(path: str, values: Mapping[str, str], fixed: Mapping[str, str]) -> str:
    """A link to this list with these filters; those the path sets stay out of the query."""
    query = urlencode({key: value for key, value in values.items() if key not in fixed})
    return f"{path}?{query}" if query else path


def _environment(prefix: str) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined, auto_reload=False
    )
    environment.globals["ui"] = prefix
    environment.filters.update(
        ago=_ago, clock=_clock, epoch_clock=_epoch_clock, duration=_duration, field_input=_field_input
    )
    return environment


def _field_input(field: FilterField) -> str:
    return {"number": "number", "date": "date"}.get(field.input, "text")


def _clock(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _epoch_clock(at: float) -> str:
    return _clock(datetime.fromtimestamp(at, UTC))


def _ago(moment: datetime | None) -> str:
    return "" if moment is None else f"{_duration(time.time() - moment.timestamp())} ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def _with_page_headers(app: ASGIApp) -> ASGIApp:
    """Every answer: a strict content policy, no caching of pages that show customers' data, and the time
    the server took (Server-Timing, read by the benchmark and the browser's developer tools)."""

    async def with_headers(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        static = "/static/" in scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                extra = [*SECURITY_HEADERS, (b"server-timing", f"app;dur={elapsed:.2f}".encode())]
                if not static:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await app(scope, receive, send_with_headers)

    return with_headers
