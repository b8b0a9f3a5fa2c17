"""Asking a person, during a `notify` call, whether a message on a `confirm = true` channel may go out: the
SDK's resolvers send `elicitation/create` on a 2025 session and return the input-required result on a
2026-07-28 one. A client that cannot ask leaves the message awaiting approval instead."""

from __future__ import annotations

import json
from typing import Any, Protocol

from mcp.server.elicitation import AcceptedElicitation, DeclinedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, Elicit
from pydantic import BaseModel, Field

from ..actions.channels import recipient_for
from ..approvals import Consent, needs_confirmation
from ..errors import InboxError
from ..inbox import Inbox

NOT_ASKED = "not asked"


class Agreement(BaseModel):
    send: bool = Field(default=True, title="Send it", description="untick to decline: nothing is sent")


class ServesAnInbox(Protocol):
    inbox: Inbox


async def ask_first(
    channel: str, message: str, ctx: Context, event_id: str | None = None, subject: str | None = None
) -> Elicit[Agreement] | str:
    """The question to ask before sending, or NOT_ASKED: the channel needs no confirmation, the client cannot
    ask anyone, or the call is wrong anyway (the tool itself says how)."""
    inbox = _inbox(ctx.mcp_server)
    config = inbox.settings.all_channels.get(channel)
    if config is None or not needs_confirmation(config) or not _can_ask(ctx):
        return NOT_ASKED
    try:
        event = (await inbox.event(event_id)).body() if event_id is not None else None
        recipient = recipient_for(config, event) or channel
    except InboxError:
        return NOT_ASKED
    about = f"about Stripe event {event_id} ({event['type']})" if event else "not about any event"
    lines = [
        f"An agent wants to send this message through {channel!r} to {recipient}, {about}.",
        *([f"Subject: {json.dumps(subject, ensure_ascii=False)}"] if subject else []),
        f"Message: {json.dumps(message, ensure_ascii=False)}",
        "Send it? Declining sends nothing and is recorded.",
    ]
    return Elicit("\n".join(lines), Agreement)


def consent_of(asked: ElicitationResult[Any]) -> Consent | None:
    """What the person said; None when no one was asked, or they dismissed the question without answering
    (then it waits for approval elsewhere)."""
    if isinstance(asked, AcceptedElicitation):
        if isinstance(asked.data, Agreement):
            return "granted" if asked.data.send else "declined"
        return None
    if isinstance(asked, DeclinedElicitation):
        return "declined"
    return None


def _can_ask(ctx: Context) -> bool:
    elicitation = ctx.client_capabilities.elicitation if ctx.client_capabilities is not None else None
    # A bare `elicitation: {}` (before modes existed) offers forms; url-only does not.
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _inbox(server: Any) -> Inbox:
    served: ServesAnInbox = server
    return served.inbox
