"""Masking personal data in what MCP hands out; the stored event stays exactly as Stripe sent it."""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

Kind = Literal["email", "phone", "address", "name"]
MASK = "[redacted]"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
ADDRESS_KEYS = frozenset({"address", "billing_address", "shipping_address", "customer_address"})
NAME_KEYS = frozenset({"customer_name", "account_holder_name", "cardholder_name", "shipping_name"})
# Objects whose `name` is a person's, not a product's or a plan's.
PEOPLE = frozenset({"billing_details", "shipping", "customer_shipping", "customer_details", "owner", "individual"})

ModelT = TypeVar("ModelT", bound=BaseModel)


class Redactor:
    def __init__(self, kinds: list[Kind]) -> None:
        self.kinds = frozenset(kinds)

    def model(self, model: ModelT) -> ModelT:
        if not self.kinds:
            return model
        return type(model).model_validate(self.value(model.model_dump(mode="json")))

    def value(self, value: Any, key: str = "", parent: str = "", person: bool = False) -> Any:
        if isinstance(value, dict):
            is_person = person or key in PEOPLE or value.get("object") == "customer"
            if "address" in self.kinds and key in ADDRESS_KEYS:
                return _mask_leaves(value)
            return {k: self.value(v, k, key, is_person) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(item, key, parent, person) for item in value]
        if not isinstance(value, str):
            return value
        if self._masks(key, person):
            return MASK
        return EMAIL.sub(MASK, value) if "email" in self.kinds else value

    def _masks(self, key: str, person: bool) -> bool:
        return (
            ("email" in self.kinds and key.endswith("email"))
            or ("phone" in self.kinds and key.endswith("phone"))
            or ("address" in self.kinds and key in ADDRESS_KEYS)
            or ("name" in self.kinds and (key in NAME_KEYS or (key == "name" and person)))
        )


def _mask_leaves(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_leaves(item) for item in value]
    return MASK if isinstance(value, str) else value
