"""Deliveries made elsewhere and reported back: the body of ``POST /api/requests/{id}/attempts``.

``hookbin listen`` delivers captured requests to a server on a developer's machine and reports
each outcome; only that kind (``listen``) can be reported, since replays and forwards are stored
by the server itself. The shape is checked by a pydantic model in strict mode (``true`` is not
a number, ``200.0`` is not a status); each field's message is the one the API document gives.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.invalid import Invalid

__all__ = ["ListenReport", "parse_listen_report"]

_MESSAGES = {
    "url": "url must be a non-empty string",
    "method": "method must be a string of 1 to 64 characters",
    "status": "status must be an HTTP status code (100-999) or null",
    "headers": "headers must be a list of [name, value] string pairs",
    "body_base64": "body_base64 must be a string",
    "elapsed_ms": "elapsed_ms must be a non-negative number",
    "error": "error must be a string or null",
    "truncated": "truncated must be true or false",
}


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    url: Annotated[str, Field(min_length=1)]
    method: Annotated[str, Field(min_length=1, max_length=64)]
    status: Annotated[int, Field(ge=100, le=999)] | None = None
    headers: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = []
    body_base64: str = ""
    elapsed_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    error: str | None = None
    truncated: bool = False


@dataclass(frozen=True)
class ListenReport:
    """A checked report: the answer the developer's server gave (or the error instead)."""

    url: str
    method: str
    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    elapsed_ms: float
    error: str | None
    truncated: bool


def parse_listen_report(data: Mapping[str, Any]) -> ListenReport:
    """The report in a JSON object body; raises ``Invalid`` naming the first bad field.

    A ``kind`` other than ``"listen"`` is well-formed but cannot be stored: ``Invalid`` with
    status 422.
    """
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise Invalid("kind", "kind must be a string")
    if kind != "listen":
        raise Invalid(
            "kind",
            'only kind "listen" can be reported; replays and forwards are stored by '
            "the server itself",
            status=422,
        )
    try:
        shape = _Shape.model_validate(data)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        raise Invalid(field, _MESSAGES.get(field, f"{field} is not valid")) from None
    try:
        body = base64.b64decode(shape.body_base64, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("body_base64", "body_base64 is not valid base64") from None
    return ListenReport(
        url=shape.url,
        method=shape.method,
        status=shape.status,
        headers=[(name, value) for name, value in shape.headers],
        body=body,
        elapsed_ms=shape.elapsed_ms,
        error=shape.error,
        truncated=shape.truncated,
    )
