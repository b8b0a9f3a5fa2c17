"""The few Stripe API calls stripe-inbox makes, through the `stripe` package, with errors a person can act on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import stripe

from ..errors import InboxError
from ..events import is_stripe_id

PAGE_SIZE = 100


class StripeAPIError(InboxError):
    """Stripe refused a request or could not be reached; the message says which and what to do."""


class StripeAPI:
    def __init__(self, api_key: str | None, api_base: str) -> None:
        if not api_key:
            raise StripeAPIError(
                "no Stripe API key: set STRIPE_API_KEY (a restricted key with read access to events and "
                "write access to webhook endpoints is enough)"
            )
        self.api_base = api_base
        self.client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base}, max_network_retries=2, http_client=stripe.HTTPXClient()
        )

    async def _request(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        try:
            response = await self.client.raw_request_async(method, path, **params)
        except stripe.AuthenticationError:
            raise StripeAPIError("Stripe refused the API key (401): check STRIPE_API_KEY") from None
        except stripe.PermissionError as error:
            raise StripeAPIError(f"the API key may not do this (403): {error.user_message}") from None
        except stripe.RateLimitError:
            raise StripeAPIError("Stripe is rate-limiting this key (429): try again in a minute") from None
        except stripe.APIConnectionError:
            raise StripeAPIError(f"cannot reach the Stripe API at {self.api_base}: check the network") from None
        except stripe.StripeError as error:
            status = f" ({error.http_status})" if error.http_status else ""
            raise StripeAPIError(f"Stripe answered with an error{status}: {error.user_message or error}") from None
        return json.loads(response.body)

    async def webhook_endpoints(self) -> AsyncIterator[dict[str, Any]]:
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        while True:
            page = await self._request("get", "/v1/webhook_endpoints", **params)
            for endpoint in page["data"]:
                yield endpoint
            if not page.get("has_more") or not page["data"]:
                return
            params["starting_after"] = page["data"][-1]["id"]

    async def create_webhook_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._request("post", "/v1/webhook_endpoints", **params)

    async def events_page(self, params: dict[str, Any]) -> tuple[list[bytes], bool]:
        """One page of events, newest first, each as its own JSON; and whether more follow."""
        page = await self._request("get", "/v1/events", limit=PAGE_SIZE, **params)
        return [json.dumps(event).encode() for event in page["data"]], bool(page.get("has_more"))

    async def v2_event(self, event_id: str) -> dict[str, Any]:
        return await self._request("get", f"/v2/core/events/{id_segment(event_id)}")


def id_segment(object_id: str) -> str:
    """A Stripe id as one path segment: checked for Stripe's shape, and percent-encoded all the same, so that
    an id from a payload can never name another endpoint (`../../v1/customers?limit=3`)."""
    if not is_stripe_id(object_id):
        raise StripeAPIError(f"{json.dumps(object_id)[:80]} is not a Stripe id (such as evt_1NG8Du2e…): not sent")
    return quote(object_id, safe="")
