"""The hot paths' JSON codec gives what the standard library gives, faster."""

from __future__ import annotations

import json
import math

import pytest

from app.core import fastjson

VALUES = [
    [["Host", "example.com"], ["X-Twice", "a"], ["X-Twice", "b"]],
    {"provider": None, "status": "unchecked", "reason": "no signing secret"},
    {"ünïcode": "日本語 \u2028 <script>", "n": 2**63 - 1, "f": 0.1, "t": True, "l": []},
]


@pytest.mark.parametrize("value", VALUES)
def test_round_trips_like_the_standard_library(value) -> None:
    text = fastjson.dumps(value)
    assert json.loads(text) == value
    assert fastjson.loads(text) == value
    assert fastjson.loads(json.dumps(value)) == value  # rows written before


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**70},  # beyond 64 bits
        ["lone \ud800 surrogate"],
        {1: "int key"},
        {"nan": float("nan"), "inf": [float("inf")]},
    ],
)
def test_what_orjson_refuses_or_changes_is_written_as_the_standard_library_does(value) -> None:
    assert fastjson.dumps(value) == json.dumps(value)


def test_what_orjson_cannot_read_is_read_by_the_standard_library() -> None:
    assert fastjson.loads("[NaN, Infinity, 1e400]")[1:] == [math.inf, math.inf]
    with pytest.raises(ValueError):
        fastjson.loads("{not json")


def test_what_nothing_can_write_still_fails() -> None:
    with pytest.raises(TypeError):
        fastjson.dumps({"body": b"bytes"})
