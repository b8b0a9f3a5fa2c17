"""POST /webhooks/stripe through the ASGI app: verification, limits, dedupe, durability, health, metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.web.app import create_app
from stripe_inbox.web.ingress import MAX_BODY_BYTES

from .conftest import OTHER_SECRET, SECRET, deliver, encode, make_event, signed_headers

pytestmark = pytest.mark.anyio


async def test_signed_event_is_stored_byte_exact_and_pending(http: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event()
    payload = encode(event)
    response = await deliver(http, payload)
    assert response.status_code == 200
    assert response.json() == {"received": True}
    stored = await inbox.store.get_event(event["id"])
    assert stored is not None
    assert stored.payload == payload
    assert (stored.status, stored.deliveries, stored.type) == ("pending", 1, "invoice.payment_failed")


async def test_any_configured_secret_verifies(http: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event()
    assert (await deliver(http, event, secret=OTHER_SECRET)).status_code == 200
    assert await inbox.store.get_event(event["id"]) is not None


async def test_any_v1_signature_in_the_header_verifies(http: httpx.AsyncClient, inbox: Inbox) -> None:
    payload = encode(make_event())
    header = signed_headers(payload)["Stripe-Signature"]
    timestamp, good = header.split(",")
    response = await http.post(
        "/webhooks/stripe", content=payload, headers={"Stripe-Signature": f"{timestamp},v1={'0' * 64},{good}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_signature"),
        ({"Stripe-Signature": ""}, "missing_signature"),
        ({"Stripe-Signature": "garbage"}, "invalid_signature"),
        ({"Stripe-Signature": "t=notanumber,v1=abc"}, "invalid_signature"),
    ],
)
async def test_malformed_signature_headers(
    http: httpx.AsyncClient, inbox: Inbox, headers: dict[str, str], code: str
) -> None:
    response = await http.post("/webhooks/stripe", content=encode(make_event()), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert response.json()["message"]
    assert (await inbox.stats()).total == 0


async def test_wrong_secret_and_tampered_body_are_invalid_signatures(http: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event()
    wrong = await deliver(http, event, secret="whsec_someone_else_entirely")
    payload = encode(event)
    headers = signed_headers(payload)
    tampered = await http.post("/webhooks/stripe", content=payload.replace(b"4900", b"1"), headers=headers)
    for response in (wrong, tampered):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_signature"
    assert (await inbox.stats()).total == 0


async def test_v0_signature_alone_never_passes(http: httpx.AsyncClient) -> None:
    payload = encode(make_event())
    v1 = signed_headers(payload)["Stripe-Signature"]
    response = await http.post(
        "/webhooks/stripe", content=payload, headers={"Stripe-Signature": v1.replace("v1=", "v0=")}
    )
    assert response.json()["error"] == "invalid_signature"


@pytest.mark.parametrize("offset", [-301, 301, -3600, 86400])
async def test_timestamp_outside_300_seconds_either_way(http: httpx.AsyncClient, inbox: Inbox, offset: int) -> None:
    response = await deliver(http, make_event(), timestamp=int(time.time()) + offset)
    assert response.status_code == 400
    assert response.json()["error"] == "timestamp_out_of_tolerance"
    assert (await inbox.stats()).total == 0


@pytest.mark.parametrize("offset", [-290, 290])
async def test_timestamp_inside_tolerance_passes(http: httpx.AsyncClient, offset: int) -> None:
    assert (await deliver(http, make_event(), timestamp=int(time.time()) + offset)).status_code == 200


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "invoice.paid"}', "'id'"),
        (b'{"id": "evt_1", "type": 7}', "'type'"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"id": "evt_\xff", "type": "x"}', "not valid JSON"),
    ],
)
async def test_signed_but_invalid_payloads(
    http: httpx.AsyncClient, inbox: Inbox, payload: bytes, fragment: str
) -> None:
    timestamp = int(time.time())  # signed over the raw bytes, as Stripe signs, even when they are not UTF-8
    digest = hmac.new(SECRET.encode(), b"%d." % timestamp + payload, hashlib.sha256).hexdigest()
    response = await http.post(
        "/webhooks/stripe", content=payload, headers={"Stripe-Signature": f"t={timestamp},v1={digest}"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"
    assert fragment in response.json()["message"]
    assert (await inbox.stats()).total == 0


async def test_body_over_one_mebibyte_is_413(http: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event(padding="x" * MAX_BODY_BYTES)
    response = await deliver(http, event)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"

    async def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(20):
            yield b"x" * 65536

    streamed = await http.post("/webhooks/stripe", content=chunks(), headers={"Stripe-Signature": "t=1,v1=00"})
    assert streamed.status_code == 413
    assert (await inbox.stats()).total == 0


async def test_wrong_method_is_405(http: httpx.AsyncClient) -> None:
    response = await http.get("/webhooks/stripe")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


async def test_duplicate_delivery_is_one_row_two_deliveries(http: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event()
    first, second = await deliver(http, event), await deliver(http, event)
    assert first.json() == {"received": True}
    assert second.status_code == 200
    assert second.json() == {"received": True, "duplicate": True}
    page = await inbox.list_events(status="all")
    assert [e.id for e in page.events] == [event["id"]]
    assert page.events[0].deliveries == 2


async def test_acked_event_redelivered_stays_acked(http: httpx.AsyncClient, inbox: Inbox) -> None:
    event = make_event()
    await deliver(http, event)
    await inbox.ack(event["id"], "handled", "done", actor="test")
    assert (await deliver(http, event)).status_code == 200
    stored = await inbox.event(event["id"])
    assert (stored.status, stored.outcome, stored.note, stored.deliveries) == ("acked", "handled", "done", 2)
    assert (await inbox.list_events()).total == 0


async def test_event_type_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        db=str(tmp_path / "f.db"), webhook_secret=SECRET, events=["invoice.*", "charge.dispute.created"]
    )
    async with open_inbox(settings) as inbox:
        transport = httpx.ASGITransport(app=create_app(inbox))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            kept = [make_event("invoice.paid"), make_event("charge.dispute.created")]
            dropped = [
                make_event("charge.succeeded"),
                make_event("invoicex.paid"),
                make_event("charge.dispute.closed"),
            ]
            for event in kept:
                assert (await deliver(http, event)).json() == {"received": True}
            for event in dropped:
                response = await deliver(http, event)
                assert response.status_code == 200
                assert response.json() == {"received": True, "filtered": True}
            stored = {e.id for e in (await inbox.list_events(status="all")).events}
            assert stored == {e["id"] for e in kept}
            metrics = (await http.get("/metrics")).text
            assert 'stripe_inbox_deliveries_total{result="filtered",status="200"} 3.0' in metrics


async def test_store_that_cannot_write_gets_503_and_claims_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "locked.db"
    settings = load_settings(db=str(db), webhook_secret=SECRET, lock_timeout_seconds=0.2)
    async with open_inbox(settings) as inbox:
        transport = httpx.ASGITransport(app=create_app(inbox))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            event = make_event()
            other_process = sqlite3.connect(db, isolation_level=None)
            other_process.execute("BEGIN IMMEDIATE")  # holds the write lock, as a stuck writer would
            try:
                response = await deliver(http, event)
            finally:
                other_process.execute("ROLLBACK")
                other_process.close()
            assert response.status_code == 503
            assert response.json()["error"] == "store_unavailable"
            assert await inbox.store.get_event(event["id"]) is None
            retried = await deliver(http, event)  # Stripe retries; now it lands, once
            assert retried.status_code == 200
            assert (await inbox.event(event["id"])).deliveries == 1


async def test_every_200_is_committed_for_another_connection(
    http: httpx.AsyncClient, inbox: Inbox, db_path: Path
) -> None:
    events = [make_event() for _ in range(5)]
    for event in events:
        assert (await deliver(http, event)).status_code == 200
    with sqlite3.connect(db_path) as other:  # a separate connection sees only committed rows
        ids = {row[0] for row in other.execute("SELECT id FROM events")}
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ids == {e["id"] for e in events}


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_metrics_count_deliveries_events_and_latency(http: httpx.AsyncClient) -> None:
    await deliver(http, make_event("invoice.paid"))
    await deliver(http, make_event("invoice.paid"))
    await http.post("/webhooks/stripe", content=b"{}")
    text = (await http.get("/metrics")).text
    assert 'stripe_inbox_deliveries_total{result="stored",status="200"} 2.0' in text
    assert 'stripe_inbox_deliveries_total{result="missing_signature",status="400"} 1.0' in text
    assert 'stripe_inbox_events{status="pending",type="invoice.paid"} 2.0' in text
    assert "stripe_inbox_ingress_latency_seconds_count 3.0" in text


async def test_one_log_line_per_delivery_without_secrets(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    event = make_event()
    with caplog.at_level("INFO", logger="stripe_inbox.ingress"):
        await deliver(http, event)
        await http.post("/webhooks/stripe", content=b"{}")
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "stripe_inbox.ingress"]
    assert [r["result"] for r in records] == ["stored", "missing_signature"]
    assert records[0]["event_id"] == event["id"] and records[0]["type"] == event["type"]
    assert all(r["latency_ms"] >= 0 for r in records)
    assert SECRET not in caplog.text and "whsec_" not in caplog.text
