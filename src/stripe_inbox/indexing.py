"""What search knows of an event, read from its stored payload by the indexer (in the background, or for a read
that finds a few events queued; never on the way to the 200): the ids it is about, its e-mails, and the words
people search for (ids, e-mails, names, descriptions, failure and decline messages, metadata values), never the
whole JSON. Queries are cut into words by the same rules, so both databases match alike."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from .events import data_object

# An event is about its own object and about these, when its object refers to them.
REFERENCE_FIELDS = ("invoice", "payment_intent", "charge", "subscription")
EMAIL_FIELDS = ("email", "customer_email", "receipt_email")
NAME_FIELDS = ("name", "customer_name", "description", "statement_descriptor", "failure_message", "failure_code")
NESTED_FIELDS = ("billing_details", "customer_details", "shipping")  # each may hold an email and a name
ERROR_FIELDS = ("last_payment_error", "last_setup_error", "cancellation_details", "outcome")
ERROR_TEXT = ("message", "code", "decline_code", "reason", "feedback", "comment", "seller_message")
ID_FIELDS = ("customer", "payment_method", "latest_charge", "latest_invoice", "dispute", "refund")
MAX_LINES = 5  # an invoice's first line descriptions
MAX_TERMS = 200
# Longer words are cut here, in the index and in queries alike: PostgreSQL refuses a lexeme over 2047 bytes (this
# many characters of UTF-8 stay under it), and one such word (a token in metadata) would fail its every batch.
MAX_WORD = 500
WORD = re.compile(r"[\w@](?:[\w@.+-]*[\w@])?")  # runs of [\w@.+-], not starting or ending in .+-
TAIL = re.compile(r"[_@](?=.)")  # where a tail of a word starts
# PostgreSQL's GIN finds a prefix (`'jane':*`) by merging every lexeme that starts with it into one bitmap, 4 to
# 10 times the work of one exact lexeme at 1M events; so there each term's prefixes of these lengths are indexed as
# lexemes of their own, marked so no term can be one (WORD never holds the mark), and a query word of these
# lengths is searched as that one lexeme. A longer word is narrow: its prefix match stays cheap.
PREFIX_MARK = "^"
PREFIX_LENGTHS = range(1, 9)


@dataclass(frozen=True, slots=True)
class Findable:
    emails: tuple[str, ...]  # lowercased
    related_ids: tuple[str, ...]  # the object's own id first
    text: str  # the terms full-text search indexes, space-separated

    @property
    def keys(self) -> tuple[str, ...]:
        """What the event is found by exactly: the ids it is about (its timelines) and its e-mails."""
        return self.related_ids + self.emails


NOTHING = Findable((), (), "")


def findables(events: list[tuple[int, bytes]], prefixed: bool) -> list[tuple[int, Findable]]:
    """What search knows of each of some stored events, given by seq and payload; run where the GIL is free.
    `prefixed`: for a full-text index of prefix lexemes (Dialect.text_prefixes), the text holds them too."""
    found = [(seq, findable_payload(payload)) for seq, payload in events]
    if prefixed:
        return [(seq, replace(facts, text=with_prefixes(facts.text))) for seq, facts in found]
    return found


def findable_payload(payload: bytes) -> Findable:
    """What search knows of a stored event, from the exact bytes Stripe sent (a snapshot or a thin event)."""
    try:
        event = orjson.loads(payload)
    except ValueError:
        return NOTHING
    if not isinstance(event, dict) or not isinstance(event_id := event.get("id"), str):
        return NOTHING
    if event.get("object") == "v2.core.event":
        related, context = event.get("related_object"), event.get("context")
        account = context if isinstance(context, str) and context.startswith("acct_") else None
        return findable(event_id, related if isinstance(related, dict) else {}, account)
    account = event.get("account")
    return findable(event_id, data_object(event), account if isinstance(account, str) else None)


def findable(event_id: str, obj: dict[str, Any], account: str | None) -> Findable:
    own = obj.get("id")
    related = [own] if isinstance(own, str) and own else []
    for name in REFERENCE_FIELDS:
        referred = _id(obj.get(name))
        if referred and referred not in related:
            related.append(referred)
    emails = [value for name in EMAIL_FIELDS if isinstance(value := obj.get(name), str) and "@" in value]
    texts = [event_id, account, *related, *emails]
    texts += [_id(obj.get(name)) for name in ID_FIELDS]
    texts += [obj.get(name) for name in NAME_FIELDS]
    for name in NESTED_FIELDS:
        nested = obj.get(name)
        if isinstance(nested, dict):
            email = nested.get("email")
            if isinstance(email, str) and "@" in email:
                emails.append(email)
            texts += [email, nested.get("name")]
    for name in ERROR_FIELDS:
        error = obj.get(name)
        if isinstance(error, dict):
            texts += [error.get(field) for field in ERROR_TEXT]
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        texts += list(metadata.values())
    lines = obj.get("lines")
    if isinstance(lines, dict) and isinstance(lines.get("data"), list):
        texts += [line.get("description") for line in lines["data"][:MAX_LINES] if isinstance(line, dict)]
    if obj.get("object") == "dispute":
        texts.append(obj.get("reason"))
    return Findable(
        emails=tuple(dict.fromkeys(_storable(email).strip().lower() for email in emails)),
        related_ids=tuple(dict.fromkeys(_storable(related_id) for related_id in related)),
        text=" ".join(terms(_storable(text) for text in texts if isinstance(text, str))),
    )


def terms(texts: Iterable[str]) -> list[str]:
    """The distinct indexed terms of some texts: each word lowercased, and every tail of it after an
    underscore or an @, so that the end of an id (`1NxAbc` of `in_1NxAbc`), a decline code's last word or an
    e-mail's domain is found as well as the whole."""
    found: dict[str, None] = {}
    for word in words(" ".join(texts)):
        found[word] = None
        if "_" in word or "@" in word:
            for tail in TAIL.finditer(word):
                found[word[tail.end() :]] = None
        if len(found) >= MAX_TERMS:
            break
    return list(found)


def with_prefixes(text: str) -> str:
    """Space-separated terms, and after them the prefix lexemes of each (PREFIX_LENGTHS), once each."""
    terms = text.split()
    shortest, longest = PREFIX_LENGTHS.start, PREFIX_LENGTHS.stop - 1
    prefixes = dict.fromkeys(
        PREFIX_MARK + term[:length] for term in terms for length in range(shortest, min(len(term), longest) + 1)
    )
    return " ".join([*terms, *prefixes])


def prefix_lexeme(word: str) -> str | None:
    """The one lexeme of an index of prefix lexemes that finds every term starting with the query word `word`;
    None for a word of a length not indexed so."""
    return PREFIX_MARK + word if len(word) in PREFIX_LENGTHS else None


def words(text: str) -> list[str]:
    """A text's words as search cuts them: runs of letters, digits and `_@.+-`, lowercased, without the
    punctuation a sentence ends them with; each cut at MAX_WORD characters."""
    return [word[:MAX_WORD] for word in WORD.findall(text.lower())]


def _storable(text: str) -> str:
    """The text without NUL, which JSON may carry but PostgreSQL's text cannot: one such event would otherwise
    fail every batch it is in, and hold up the index for all that come after it."""
    return text.replace("\x00", "")


def _id(value: Any) -> str | None:
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None
