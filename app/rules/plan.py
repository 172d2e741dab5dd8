"""Planning the answer to one request: which rule, a simulated failure or not, rendered answer.

Everything here is pure: counting "fail the first N" hits is a callback (the database does it,
see ``app.rules.hits``), and the capture path turns a ``Planned`` answer into bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.rules.limits import FIELD_VALUE, MAX_HEADER_VALUE_CHARS, NO_BODY_STATUSES
from app.rules.match import Incoming, choose
from app.rules.templates import AnswerError, render_template


@dataclass(slots=True)
class Planned:
    """What the capture URL answers one request with.

    Either ``body`` (a configured answer, rendered) or ``payload`` (a small JSON object that the
    capture path completes with the stored request's id: the standard acknowledgement, a
    simulated failure, or a template error) is set.
    """

    status: int
    rule: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    content_type: str | None = None
    payload: dict[str, Any] | None = None
    delay: float = 0.0


ACKNOWLEDGEMENT: dict[str, Any] = {"ok": True}


def plan(
    responses: dict[str, Any],
    incoming: Incoming,
    *,
    count: Callable[[str], int],
    rng: Callable[[], float] = random.random,
) -> Planned:
    """Decide the answer to ``incoming`` under a bin's (validated) ``responses`` setting.

    ``count(rule_id)`` adds one to the rule's hit counter and returns the new value; it is only
    called for rules with ``fail_first``. Template errors do not raise: they plan a 500 naming the
    problem, so that the capture is still stored.
    """
    rule = choose(responses.get("rules") or [], incoming)
    rule_id = None if rule is None else rule["id"]
    if rule is not None:
        failing = rule.get("fail_first")
        if failing is not None:
            hits = count(rule_id)  # type: ignore[arg-type]
            if hits <= failing["count"]:
                return _failure(failing["status"], rule_id, f"failure {hits} of {failing['count']}")
        chance = rule.get("fail_random")
        if chance is not None and rng() < chance["probability"]:
            return _failure(chance["status"], rule_id, f"probability {chance['probability']:g}")
    answer = (rule or {}).get("answer") or responses.get("default")
    if answer is None:
        return Planned(status=200, rule=rule_id, payload=dict(ACKNOWLEDGEMENT))
    where = "default answer" if rule is None or "answer" not in rule else f"rule {rule_id}"
    try:
        return render_answer(answer, incoming, rule=rule_id, where=where)
    except AnswerError as exc:
        return Planned(status=500, rule=rule_id, payload={"error": str(exc)})


def _failure(status: int, rule_id: str | None, why: str) -> Planned:
    return Planned(
        status=status,
        rule=rule_id,
        payload={"error": f"simulated failure by response rule {rule_id} ({why})"},
    )


def render_answer(
    answer: dict[str, Any], incoming: Incoming, *, rule: str | None = None, where: str = "answer"
) -> Planned:
    """Render a validated answer for ``incoming``; raises AnswerError naming what failed."""
    status = answer["status"]
    headers = []
    for name, source in answer["headers"]:
        value = render_template(source, incoming, where=f"{where}, header {name}")
        if len(value) > MAX_HEADER_VALUE_CHARS or not FIELD_VALUE.match(value):
            raise AnswerError(
                f"response template failed ({where}, header {name}): the value must be at most "
                f"{MAX_HEADER_VALUE_CHARS} characters without line breaks or control characters"
            )
        headers.append((name, value))
    delay = float(answer["delay"])
    if status in NO_BODY_STATUSES:
        return Planned(status=status, rule=rule, headers=headers, body=b"", delay=delay)
    if answer["body"] is None:
        return Planned(
            status=status, rule=rule, headers=headers, payload=dict(ACKNOWLEDGEMENT), delay=delay
        )
    body = _utf8(render_template(answer["body"], incoming, where=f"{where}, body"))
    content_type = answer["content_type"]
    return Planned(
        status=status,
        rule=rule,
        headers=headers,
        body=body,
        content_type=content_type,
        delay=delay,
    )


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A JSON body may carry lone surrogates ("\ud800"), which UTF-8 cannot: write U+FFFD.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
