"""Each filter of list_events is declared once, in filters.py: MCP's tool, `events list`, the dashboard's form and
Inbox.list_events take its name, type, default and help from there, and no other face spells it."""

from __future__ import annotations

import ast
import inspect
import json
import re
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from stripe_inbox import Inbox, open_inbox
from stripe_inbox.cli import build_parser, main
from stripe_inbox.errors import InvalidArgument
from stripe_inbox.events import IncomingEvent
from stripe_inbox.filters import FILTERS, MAX_PAGE, SEARCH, SELECTION, EventQuery, Terms, filter_named
from stripe_inbox.mcp import create_mcp_server
from stripe_inbox.settings import Settings
from stripe_inbox.web.filters import FORM

from .conftest import SECRET, encode, make_event
from .test_cli_package import subcommands

pytestmark = pytest.mark.anyio
SRC = Path(__file__).resolve().parents[1] / "src" / "stripe_inbox"
# Filter names no other concept shares, so that wherever they appear is where a filter is spelled out.
ONLY_FILTERS = ("amount_gte", "amount_lte", "created_after")
# What takes filters by name (a keyword, a positional name, a dict of them), and the mappings and objects
# that hold them by name: where a filter's name is spelled as a filter, not as an event fact, a Stripe field or a word.
FILTER_TAKERS = {"Filter", "filter_named", "list_events", "EventQuery", "query", "of", "ListView"}
FILTER_HOLDERS = {"given", "values", "terms", "priced", "BY_NAME", "query", "selection", "query_params"}
MOST_FILES = 2


async def test_mcp_publishes_each_filter_with_its_declared_type_default_and_description(inbox: Inbox) -> None:
    async with Client(create_mcp_server(inbox)) as client:
        (tool,) = [tool for tool in (await client.list_tools()).tools if tool.name == "list_events"]
    properties = tool.input_schema["properties"]
    assert list(properties) == [each.name for each in FILTERS]
    for each in FILTERS:
        assert properties[each.name].get("description") == each.description, each.name
        assert properties[each.name].get("default") == each.default, each.name
    assert properties["status"]["enum"] == ["pending", "acked", "all"]
    assert (properties["limit"]["minimum"], properties["limit"]["maximum"]) == (1, MAX_PAGE)
    assert properties["livemode"]["type"] == ["boolean", "null"]


def test_events_list_has_each_declared_flag_with_its_help() -> None:
    listing = subcommands(subcommands(build_parser())["events"])["list"]
    flags = {action.dest: action for action in listing._actions}
    for each in FILTERS:
        if each.flag is None:
            assert each.name not in flags
            continue
        action = flags[each.name]
        assert action.option_strings == [each.flag.flag or "--" + each.name.replace("_", "-")]
        assert (action.help, action.metavar, action.default) == (each.flag.help, each.flag.metavar, each.default)


def test_the_form_has_a_field_for_each_declared_widget_status_and_search_first() -> None:
    widgets = {each.name: each.widget for each in FILTERS if each.widget is not None}
    assert [field.name for field in FORM][:2] == ["status", "query"]
    assert sorted(field.name for field in FORM) == sorted(widgets)
    for field in FORM:
        assert (field.label, field.input) == (widgets[field.name].label, widgets[field.name].input)
    choices = {field.name: field.choices for field in FORM if field.input == "select"}
    assert choices == {"status": ("pending", "acked", "all"), "livemode": ("", "true", "false")}


def test_a_form_field_reads_its_text_by_its_filters_type() -> None:
    fields = {field.name: field for field in FORM}
    assert fields["amount_gte"].parse("49.5") == 49.5 and fields["livemode"].parse("false") is False
    for name, raw, message in (
        ("amount_gte", "lots", "amount_gte 'lots' is not an amount"),
        ("livemode", "maybe", "livemode must be 'true' or 'false', not 'maybe'"),
        ("status", "done", "status must be one of pending, acked, all, not 'done'"),
    ):
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            fields[name].parse(raw)


async def test_inbox_list_events_has_the_declared_signature(inbox: Inbox) -> None:
    parameters = inspect.signature(inbox.list_events).parameters
    assert list(parameters) == [each.name for each in FILTERS]
    positional = [name for name, parameter in parameters.items() if parameter.kind is parameter.POSITIONAL_OR_KEYWORD]
    assert positional == [each.name for each in SELECTION]
    assert all(parameters[each.name].kind is inspect.Parameter.KEYWORD_ONLY for each in SEARCH)


async def test_inbox_list_events_refuses_what_is_not_a_filter(inbox: Inbox) -> None:
    with pytest.raises(TypeError, match="amount_over"):
        await inbox.list_events(amount_over=5)
    with pytest.raises(TypeError):
        await inbox.list_events("all", None, None, None, 20, None, "a query by position")


def test_terms_are_what_the_store_compares() -> None:
    given = {"status": "all", "limit": 5, "cursor": "12", "query": "Jo Doe", "amount_gte": 0.015, "amount_lte": 2}
    terms = Terms.of({**given, "email": " A@B.C ", "created_after": "2026-01-01"})
    assert terms.amount_without_currency() == "amount_gte"
    priced = terms.priced("usd")
    assert (priced["status"], priced["limit"], priced["after"], priced["words"]) == (None, 6, 12, ("jo", "doe"))
    assert (priced["amount_gte"], priced["amount_lte"], priced["currency"]) == (2, 200, "usd")  # inward rounding
    assert (priced["email"], priced["created_after"]) == ("a@b.c", 1_767_225_600)
    assert Terms.of({"amount_gte": 5, "currency": "JPY"}).priced()["amount_gte"] == 5  # zero-decimal
    for wrong, message in (
        ({"created_after": "2026-02-01", "created_before": "2026-02-01"}, "created_after '2026-02-01' must be before"),
        ({"amount_gte": 10.0, "amount_lte": 5.0}, "amount_gte 10.0 must not be more than amount_lte 5.0"),
        ({"limit": MAX_PAGE + 1}, f"limit must be between 1 and {MAX_PAGE}, not {MAX_PAGE + 1}"),
        ({"status": "done"}, "status must be 'pending', 'acked' or 'all', not 'done'"),
    ):
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            Terms.of(wrong)


def test_another_face_takes_a_filter_by_name_and_its_callers_values_as_a_store_query() -> None:
    assert filter_named("amount_gte").description == "major units"
    with pytest.raises(InvalidArgument, match="'amount_over' is not a filter of list_events: one of status, type"):
        filter_named("amount_over")
    given = {"customer": "cus_1", "object_id": " in_1 ", "amount_gte": 49.99, "currency": "USD"}
    query = Terms.of(given).query(newest_first=True)
    assert (query.status, query.customer, query.object_id, query.amount_gte, query.currency) == (
        "pending",
        "cus_1",
        "in_1",
        4999,
        "usd",
    )
    assert query.newest_first and query.searches and query.indexed and query.ranged
    assert not EventQuery().searches and not EventQuery(customer="cus_1").indexed
    # The store's query is the spec's terms, each under its store key, and the order it reads them in.
    assert [field.name for field in fields(EventQuery)] == [each.store_key for each in FILTERS] + ["newest_first"]


def test_the_flags_reach_the_inbox_as_their_filters(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, test, small = make_event("invoice.paid"), make_event("invoice.paid"), make_event("invoice.paid")
    live["livemode"] = True
    small["data"]["object"]["amount_due"] = 500
    anyio.run(stored, settings, [live, test, small])
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)

    def listed(*flags: str) -> list[str]:
        main(["events", "list", "--db", settings.db, "--status", "all", "--json", *flags])
        return sorted(event["id"] for event in json.loads(capsys.readouterr().out)["events"])

    assert listed("--livemode") == [live["id"]]
    assert listed("--livemode", "false", "--amount-gte", "10", "--currency", "usd") == [test["id"]]
    assert listed("--amount-lte", "5.00", "--created-after", "2000-01-01") == [small["id"]]


async def stored(settings: Settings, events: list[dict[str, Any]]) -> None:
    async with open_inbox(settings) as inbox:
        await inbox.store.add_events([IncomingEvent.parse(encode(event)) for event in events], time.time())


async def test_the_dashboard_passes_its_fields_to_the_filters(inbox: Inbox, http: httpx.AsyncClient) -> None:
    live, test = make_event("invoice.paid"), make_event("invoice.paid")
    live["livemode"] = True
    for event in (live, test):
        await inbox.store.add_events([IncomingEvent.parse(encode(event))], time.time())
    page = await http.get("/ui/", params={"status": "all", "livemode": "true", "amount_gte": "1", "currency": "usd"})
    assert page.status_code == 200 and live["id"] in page.text and test["id"] not in page.text
    refused = await http.get("/ui/", params={"amount_lte": "lots"})
    assert refused.status_code == 400 and "amount_lte &#39;lots&#39; is not an amount" in refused.text


@pytest.mark.parametrize("name", ONLY_FILTERS)
def test_a_filter_is_spelled_out_only_in_the_spec(name: str) -> None:
    word = re.compile(rf"\b{name}\b")
    spelled = {str(path.relative_to(SRC)) for path in SRC.rglob("*") if path.is_file() and word.search(_text(path))}
    assert spelled == {"filters.py"}  # the faces, the store's query and its SQL all read the spec


@pytest.mark.parametrize("name", [each.name for each in SEARCH])
def test_a_search_filter_is_named_as_a_filter_in_at_most_two_files(name: str) -> None:
    spelled = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if any(_names_filter(node, name) for node in ast.walk(ast.parse(path.read_text())))
    }
    assert "filters.py" in spelled and len(spelled) <= MOST_FILES, sorted(spelled)


def test_the_filter_checker_sees_each_way_code_names_a_filter() -> None:
    for code in (
        'Filter("email", str)',
        "inbox.list_events(email=x)",
        "EventQuery(email=x)",
        'ListView("t", {"email": x})',
        'given["email"]',
        'BY_NAME.get("email")',
        "query.email",
        "selection.email",
        "class EventQuery:\n    email: str",
        "class SearchQuery:\n    def indexed(self):\n        return self.email",
    ):
        assert any(_names_filter(node, "email") for node in ast.walk(ast.parse(code))), code
    for code in ('payload.get("email")', "config.email", 'Kind = Literal["email", "phone"]', "send(email=x)"):
        assert not any(_names_filter(node, "email") for node in ast.walk(ast.parse(code))), code


def _names_filter(node: ast.AST, name: str) -> bool:
    if isinstance(node, ast.ClassDef) and "Query" in node.name:  # a query's own field, or a method reading it
        declared = [each.target for each in node.body if isinstance(each, ast.AnnAssign)]
        read = [each for each in ast.walk(node) if isinstance(each, ast.Attribute) and _last_name(each.value) == "self"]
        return any(_last_name(each) == name for each in [*declared, *read])
    if isinstance(node, ast.Call) and _last_name(node.func) in FILTER_TAKERS:
        keys = [key for given in node.args if isinstance(given, ast.Dict) for key in given.keys]
        named = [*node.args, *keys]
        return any(keyword.arg == name for keyword in node.keywords) or any(_is(each, name) for each in named)
    if isinstance(node, ast.Subscript) and _last_name(node.value) in FILTER_HOLDERS:
        return _is(node.slice, name)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return _last_name(node.func.value) in FILTER_HOLDERS and any(_is(each, name) for each in node.args)
    return isinstance(node, ast.Attribute) and node.attr == name and _last_name(node.value) in FILTER_HOLDERS


def _last_name(node: ast.AST) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None


def _is(node: ast.AST | None, name: str) -> bool:
    return isinstance(node, ast.Constant) and node.value == name


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""
