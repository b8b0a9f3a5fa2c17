"""A webhook handler as people run one, in a process of its own: it checks each request with the stripe package's
`stripe.Webhook.construct_event(payload, header, secret)` (300 s tolerance) and prints one JSON line per request
on stdout: the event id, whether it verified, the exact body (base64) and the status it answered. It answers 200
to what verifies, 400 to what does not, and 500 to everything while told to fail: a line `fail` on stdin starts
that, `ok` ends it.

    python tests/forward_receiver.py PORT    (the secret in FORWARD_RECEIVER_SECRET; PORT 0 picks a free one)
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe

SECRET = os.environ["FORWARD_RECEIVER_SECRET"]
failing = threading.Event()
printing = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real handlers behind a server do

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            event = stripe.Webhook.construct_event(
                body, self.headers.get("Stripe-Signature", ""), SECRET, tolerance=300
            )
            event_id, verified = event["id"], True
        except (ValueError, stripe.SignatureVerificationError):
            event_id, verified = None, False
        status = 500 if failing.is_set() else 200 if verified else 400
        record: dict[str, Any] = {
            "id": event_id,
            "verified": verified,
            "status": status,
            "content_type": self.headers.get("Content-Type"),
            "signature": self.headers.get("Stripe-Signature"),
            "body": base64.b64encode(body).decode(),
        }
        with printing:
            print(json.dumps(record), flush=True)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def obey() -> None:
    for line in sys.stdin:
        if line.strip() == "fail":
            failing.set()
        elif line.strip() == "ok":
            failing.clear()


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    threading.Thread(target=obey, daemon=True).start()
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    server.serve_forever()
