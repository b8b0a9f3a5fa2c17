"""The dashboard's lists: the inbox (with its counts and chart), a customer's events and an object's, each
filtered by the search filters its path does not set. The list's script asks again with the change marker it
has, and is answered 204 while nothing changed."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import InboxError, StoreUnavailable
from ...inbox import Inbox
from ...models import EventSummary
from ...presenter import Presenter, Row
from ..chart import ReceivedPerHour, hourly_chart
from ..filters import FORM, Search
from .kit import PageKit

PAGE_SIZE = 25  # a screenful; with 50, rendering and classifying the rows took most of a page's time
LIVE_HEADER = "x-inbox-live"  # the list's script asks with the change marker it has; 204 when nothing changed


@dataclass(frozen=True, slots=True)
class ListView:
    title: str
    fixed: Mapping[str, str]  # filters the page's path sets: not in the form
    defaults: Mapping[str, str]
    overview: bool  # counts and chart: the inbox page only


class Lists:
    def __init__(self, inbox: Inbox, presenter: Presenter, kit: PageKit) -> None:
        self.inbox = inbox
        self.presenter = presenter
        self.kit = kit
        self.received_per_hour = ReceivedPerHour(inbox.store)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.inbox_page, methods=["GET"]),
            Route("/customers/{customer_id}", self.customer_page, methods=["GET"]),
            Route("/objects/{object_id}", self.object_page, methods=["GET"]),
        ]

    async def inbox_page(self, request: Request) -> Response:
        return await self.listing(request, ListView("Inbox", {}, {"status": "pending"}, overview=True))

    async def customer_page(self, request: Request) -> Response:
        customer = request.path_params["customer_id"]
        view = ListView(f"Customer {customer}", {"customer": customer}, {"status": "all"}, overview=False)
        return await self.listing(request, view)

    async def object_page(self, request: Request) -> Response:
        object_id = request.path_params["object_id"]
        view = ListView(f"Object {object_id}", {"object_id": object_id}, {"status": "all"}, overview=False)
        return await self.listing(request, view)

    async def listing(self, request: Request, view: ListView) -> Response:
        form_fields = [field for field in FORM if field.name not in view.fixed]
        live = LIVE_HEADER in request.headers
        try:
            search = Search.from_query(FORM, {**request.query_params, **view.fixed}, view.defaults)
            if live and request.headers[LIVE_HEADER] == str(await self.inbox.store.change_marker()):
                return Response(status_code=204)
            context = await self.context(request, view, search)
        except InboxError as error:
            if isinstance(error, StoreUnavailable):
                raise
            if live:
                return Response(status_code=204)  # the page itself says what is wrong
            values = {field.name: request.query_params.get(field.name, "") for field in form_fields}
            context = {"title": view.title, "fields": form_fields, "values": values, "error": str(error)}
            return self.kit.render(request, "list.html", {**context, "rows": None, "view": view}, 400)
        if live:
            response = self.kit.templates.TemplateResponse(request, "_live.html", context)
            response.headers["x-inbox-marker"] = str(context["marker"])
            return response
        context.update(title=view.title, fields=form_fields, values=search.values, view=view)
        return self.kit.render(request, "list.html", context)

    async def context(self, request: Request, view: ListView, search: Search) -> dict[str, Any]:
        marker = await self.inbox.store.change_marker()  # before the reads: a change made during them moves it on
        cursor = request.query_params.get("cursor") or None
        listed = await self.inbox.list_events(**search.arguments, limit=PAGE_SIZE, cursor=cursor)
        path = request.url.path
        context: dict[str, Any] = {
            "marker": marker,
            "page": listed,
            "rows": await self.rows(listed.events),
            "overview": view.overview,
            "first_url": _url(path, search.values, view.fixed),
            "next_url": listed.next_cursor and _url(path, {**search.values, "cursor": listed.next_cursor}, view.fixed),
            "on_later_page": cursor is not None,
        }
        if view.overview:
            now = time.time()
            context["stats"] = await self.inbox.stats()
            context["chart"] = hourly_chart(await self.received_per_hour.counts(now), now)
        return context

    async def rows(self, summaries: list[EventSummary]) -> list[Row]:
        stored = {event.id: event for event in await self.inbox.store.get_events([s.id for s in summaries])}
        return [self.presenter.row(summary, stored.get(summary.id)) for summary in summaries]


def _url(path: str, values: Mapping[str, str], fixed: Mapping[str, str]) -> str:
    """A link to this list with these filters; those the path sets stay out of the query."""
    query = urlencode({key: value for key, value in values.items() if key not in fixed})
    return f"{path}?{query}" if query else path
