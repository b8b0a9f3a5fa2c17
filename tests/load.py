"""Load for the durability tests: clients posting unique signed events until told to stop."""

from __future__ import annotations

import threading

import httpx

from .conftest import encode, make_event, signed_headers

CLIENTS = 8


class Load:
    """Clients posting unique signed events, one after another each, until told to stop or the server dies."""

    def __init__(self, url: str, target: int) -> None:
        self.url, self.target = url, target
        self.answered: list[tuple[str, int]] = []
        self.reached, self.stop = threading.Event(), threading.Event()

    def client(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                payload = encode(make_event())
                event_id = payload.split(b'"id": "')[1].split(b'"')[0].decode()
                try:
                    status = http.post(self.url, content=payload, headers=signed_headers(payload)).status_code
                except httpx.HTTPError:
                    return  # the server died under us
                self.answered.append((event_id, status))
                if len(self.answered) >= self.target:
                    self.reached.set()

    def ok(self) -> set[str]:
        return {event_id for event_id, status in self.answered if status == 200}
