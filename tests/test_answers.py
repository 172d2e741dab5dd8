"""Response rules: what a bin's capture URL answers.

The first half checks ``app.rules`` directly (validation messages, matching, templates and the
sandbox). The second half drives a real ``hookbin serve`` (gunicorn, gevent workers) and looks at
the answers a sender gets, byte for byte where it matters.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.rules import plan, sandbox
from app.rules.limits import MAX_TEMPLATE_NESTING
from app.rules.match import Incoming, choose, path_matches
from app.rules.templates import AnswerError, render_template
from app.rules.validate import validate_responses
from tests.conftest import TEST_OPERATOR, Server, raw_http, start_server


def incoming(
    *,
    method: str = "POST",
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Incoming:
    return Incoming(
        method=method,
        path=path,
        query_string=query,
        headers=headers or [],
        body=body,
        content_type=content_type,
    )


def refused(data: object) -> str:
    with pytest.raises(ValueError) as caught:
        validate_responses(data)
    return str(caught.value)


# --- validation -----------------------------------------------------------------------------------


def test_empty_settings_mean_the_standard_acknowledgement() -> None:
    assert validate_responses(None) is None
    assert validate_responses({}) is None
    assert validate_responses({"default": None, "rules": []}) is None


def test_answers_are_normalised_and_rules_get_stable_ids() -> None:
    saved = validate_responses(
        {
            "default": {"status": 202, "body": "ok", "headers": {"X-A": "1"}},
            "rules": [{"method": "post", "path": "/a"}, {"id": "mine", "method": ["put", "GET"]}],
        }
    )
    assert saved is not None
    assert saved["default"] == {
        "status": 202,
        "content_type": "text/plain; charset=utf-8",
        "headers": [["X-A", "1"]],
        "body": "ok",
        "delay": 0,
    }
    generated, mine = saved["rules"]
    assert generated["id"].startswith("r-") and generated["method"] == ["POST"]
    assert mine == {"id": "mine", "method": ["GET", "PUT"]}
    # Saving the stored form again keeps every id: counters follow rules, not positions.
    again = validate_responses({"default": saved["default"], "rules": saved["rules"][::-1]})
    assert again is not None
    assert [r["id"] for r in again["rules"]] == ["mine", generated["id"]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "responses must be an object"),
        (
            {"rules": [{}, {}, {"answer": {"status": 99}}]},
            "rules[2].answer.status must be an integer 200..599",
        ),
        ({"rules": [{"answer": {"status": "200"}}]}, "rules[0].answer.status must be an integer"),
        ({"default": {"status": 200, "stauts": 1}}, 'default: unknown field "stauts"'),
        ({"rules": [{"id": "a"}, {"id": "a"}]}, 'rules[1].id "a" is used by another rule'),
        ({"rules": [{"id": "no spaces"}]}, "rules[0].id must be"),
        ({"rules": [{"path": "stripe"}]}, 'rules[0].path must be a pattern starting with "/"'),
        ({"rules": [{"method": ""}]}, "rules[0].method must be"),
        ({"rules": [{"header": {"name": "X-A"}}]}, 'rules[0].header needs exactly one of "equals"'),
        ({"rules": [{"json": {"field": "a..b", "equals": 1}}]}, "rules[0].json.field must be"),
        ({"rules": [{"json": {"field": "a", "equals": [1]}}]}, "rules[0].json.equals must be"),
        ({"rules": [{"fail_first": {"count": 0}}]}, "rules[0].fail_first.count must be an integer"),
        (
            {"rules": [{"fail_first": {"count": 2, "status": 200}}]},
            "fail_first.status must be an integer 400..599",
        ),
        (
            {"rules": [{"fail_random": {"probability": 1.5}}]},
            "fail_random.probability must be a number 0..1",
        ),
        ({"default": {"delay": 31}}, "default.delay must be a number of seconds 0..30"),
        ({"default": {"delay": True}}, "default.delay must be a number"),
        ({"default": {"content_type": "text/html"}}, "default.content_type needs a body"),
        (
            {"default": {"body": "x", "content_type": "html"}},
            "default.content_type must be a media type",
        ),
        ({"default": {"body": "x" * (8 * 1024 + 1)}}, "default.body: at most 8192 characters"),
        ({"rules": [{}] * 51}, "rules: at most 50 rules"),
    ],
)
def test_validation_messages_name_the_field(data: object, message: str) -> None:
    assert message in refused(data)


@pytest.mark.parametrize(
    "name",
    [
        "Set-Cookie",
        "set-cookie",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Upgrade",
        "Content-Security-Policy",
        "Content-Security-Policy-Report-Only",
        "X-Content-Type-Options",
        "Content-Type",
        "Strict-Transport-Security",
        "Clear-Site-Data",
        "WWW-Authenticate",
        "Refresh",
    ],
)
def test_forbidden_headers_are_refused(name: str) -> None:
    message = refused({"default": {"headers": [[name, "x"]]}})
    assert message.startswith(f"default.headers: {name} ")


@pytest.mark.parametrize(
    "header",
    [
        ["X-Ok", "a\r\nSet-Cookie: s=1"],
        ["X-Ok", "a\nb"],
        ["X-Ok", "nul\x00"],
        ["X-Bad\r\nSet-Cookie", "1"],
        ["X Bad", "1"],
        ["", "1"],
        ["X-Ok", 5],
    ],
)
def test_header_names_and_values_must_be_clean(header: list) -> None:
    assert refused({"default": {"headers": [header]}}).startswith("default.headers:")


@pytest.mark.parametrize(
    ("template", "what"),
    [
        ("{% for x in json %}{{ x }}{% endfor %}", "loops"),
        ("{% macro m() %}x{% endmacro %}", "macros"),
        ("{% call foo() %}x{% endcall %}", "call blocks"),
        ("{% set x = body %}{{ x }}", "set"),
        ("{% set x %}y{% endset %}", "set"),
        ("{% include 'base.html' %}", "include"),
        ("{% import 'x' as y %}", "import"),
        ("{% from 'x' import y %}", "import"),
        ("{% extends 'base.html' %}", "extends"),
        ("{% filter upper %}{{ body }}{% endfilter %}", "filter blocks"),
        ("{% with x = 1 %}{{ x }}{% endwith %}", "with"),
        ("{{ body ~ body }}", '"~" operator'),
        ("{{ cycler }}", 'unknown name "cycler"'),
        ("{{ range(10) }}", 'unknown name "range"'),
        ("{{ self }}", 'unknown name "self"'),
        ("{{ ''.__class__ }}", '"__class__" cannot be read'),
        ("{{ body|attr('__class__') }}", 'unknown filter "attr"'),
        ("{{ body|center(999999999) }}", 'unknown filter "center"'),
        ("{{ body.ljust(99999) }}", "only these methods can be called"),
        ("{{ ''.format(1) }}", "only these methods can be called"),
        ("{{ unclosed", "template error"),
    ],
)
def test_templates_are_refused_when_saved(template: str, what: str) -> None:
    message = refused({"default": {"body": template}})
    assert message.startswith("default.body: ")
    assert what in message


def test_header_values_are_templates_too() -> None:
    message = refused({"default": {"headers": {"X-Echo": "{% for x in body %}{% endfor %}"}}})
    assert message.startswith("default.headers.X-Echo: loops are not allowed")


# --- matching -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/stripe/*", "/stripe/webhook", True),
        ("/stripe/*", "/stripe/", True),
        ("/stripe/*", "/stripe", False),
        ("/stripe/*", "/stripe/a/b", False),
        ("/stripe/**", "/stripe", True),
        ("/stripe/**", "/stripe/a/b", True),
        ("/stripe/**", "/stripes/a", False),
        ("/**/events", "/events", True),
        ("/**/events", "/a/b/events", True),
        ("/**/events", "/a/b/events/x", False),
        ("/hook-?", "/hook-1", True),
        ("/hook-?", "/hook-12", False),
        ("/v*/push", "/v2/push", True),
        ("/a%2Fb", "/a%2Fb", True),  # the raw sub-path, percent-escapes as sent
        ("/", "/", True),
        ("/", "/x", False),
        ("/**", "/anything/at/all", True),
    ],
)
def test_path_globs(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


def test_path_glob_cannot_be_made_to_backtrack_for_ever() -> None:
    # A regular expression built from this pattern backtracks exponentially on a long path.
    pattern = "/" + "*a" * 20 + "*b"
    path = "/" + "a" * 8000
    assert path_matches(pattern, path) is False  # returns promptly (linear-ish matcher)


def test_first_matching_rule_wins() -> None:
    rules = validate_responses(
        {
            "rules": [
                {"id": "gets", "method": "GET"},
                {"id": "stripe", "path": "/stripe/*"},
                {"id": "all-stripe", "path": "/stripe/**"},
            ]
        }
    )["rules"]  # type: ignore[index]
    assert choose(rules, incoming(method="GET", path="/stripe/x"))["id"] == "gets"
    assert choose(rules, incoming(path="/stripe/x"))["id"] == "stripe"
    assert choose(rules, incoming(path="/stripe/x/y"))["id"] == "all-stripe"
    assert choose(rules, incoming(path="/github")) is None


def test_header_conditions() -> None:
    rules = validate_responses(
        {
            "rules": [
                {"id": "push", "header": {"name": "x-github-event", "equals": "push"}},
                {"id": "json", "header": {"name": "Content-Type", "contains": "json"}},
                {"id": "unsigned", "header": {"name": "X-Signature", "present": False}},
            ]
        }
    )["rules"]  # type: ignore[index]

    def rule_for(headers: list[tuple[str, str]]) -> str | None:
        chosen = choose(rules, incoming(headers=[("X-Signature", "s"), *headers]))
        return None if chosen is None else chosen["id"]

    assert rule_for([("X-GitHub-Event", "push")]) == "push"
    assert rule_for([("X-GitHub-Event", "PUSH")]) is None  # values compare exactly
    assert rule_for([("content-type", "application/json; charset=utf-8")]) == "json"
    assert choose(rules, incoming())["id"] == "unsigned"  # type: ignore[index]


def test_json_conditions() -> None:
    rules = validate_responses(
        {
            "rules": [
                {"id": "verify", "json": {"field": "type", "equals": "url_verification"}},
                {"id": "flag", "json": {"field": "data.live", "equals": True}},
                {"id": "first-item", "json": {"field": "items.0.id", "equals": 7}},
                {"id": "has-event", "json": {"field": "event", "present": True}},
            ]
        }
    )["rules"]  # type: ignore[index]

    def rule_for(body: bytes) -> str | None:
        chosen = choose(rules, incoming(body=body))
        return None if chosen is None else chosen["id"]

    assert rule_for(b'{"type": "url_verification", "challenge": "c"}') == "verify"
    assert rule_for(b'{"data": {"live": true}}') == "flag"
    assert rule_for(b'{"data": {"live": 1}}') is None  # JSON's true is not 1
    assert rule_for(b'{"items": [{"id": 7}]}') == "first-item"
    assert rule_for(b'{"event": null}') == "has-event"
    assert rule_for(b"type=url_verification") is None  # not JSON at all
    assert rule_for(b"") is None


# --- planning -------------------------------------------------------------------------------------


def test_fail_first_counts_through_the_callback_only_for_counting_rules() -> None:
    config = validate_responses(
        {
            "default": {"status": 202, "body": "default"},
            "rules": [
                {"id": "plain", "path": "/plain", "answer": {"status": 201, "body": "plain"}},
                {"id": "flaky", "path": "/flaky", "fail_first": {"count": 2, "status": 503}},
            ],
        }
    )
    assert config is not None
    hits: dict[str, int] = {}

    def count(rule_id: str) -> int:
        hits[rule_id] = hits.get(rule_id, 0) + 1
        return hits[rule_id]

    plain = plan.plan(config, incoming(path="/plain"), count=count)
    assert (plain.status, plain.rule, plain.body) == (201, "plain", b"plain")
    assert hits == {}
    outcomes = [plan.plan(config, incoming(path="/flaky"), count=count) for _ in range(4)]
    assert [p.status for p in outcomes] == [503, 503, 202, 202]
    assert {p.rule for p in outcomes} == {"flaky"}
    assert "failure 2 of 2" in outcomes[1].payload["error"]  # type: ignore[index]
    # A rule without an answer of its own succeeds with the bin's default answer.
    assert outcomes[2].body == b"default"
    nothing = plan.plan(config, incoming(path="/other"), count=count)
    assert (nothing.status, nothing.rule, nothing.body) == (202, None, b"default")


def test_fail_random_uses_the_probability() -> None:
    config = validate_responses(
        {"rules": [{"id": "coin", "fail_random": {"probability": 0.5, "status": 500}}]}
    )
    assert config is not None

    def never_count(rule_id: str) -> int:
        raise AssertionError("fail_random must not touch the counter")

    low = plan.plan(config, incoming(), count=never_count, rng=lambda: 0.49)
    high = plan.plan(config, incoming(), count=never_count, rng=lambda: 0.5)
    assert (low.status, low.rule) == (500, "coin")
    # No answer and no default: the standard acknowledgement, recorded as answered by the rule.
    assert (high.status, high.rule, high.payload) == (200, "coin", {"ok": True})


def test_template_errors_plan_a_500_naming_the_problem() -> None:
    config = validate_responses(
        {"rules": [{"id": "slack", "answer": {"body": "{{ json.challenge }}"}}]}
    )
    assert config is not None
    planned = plan.plan(config, incoming(body=b'{"type": "x"}'), count=lambda r: 1)
    assert planned.status == 500 and planned.rule == "slack"
    message = planned.payload["error"]  # type: ignore[index]
    assert "rule slack, body" in message and "has no attribute 'challenge'" in message


@pytest.mark.parametrize(
    "answer", [{"status": 204, "body": "ignored"}, {"status": 205, "body": "x"}, {"status": 304}]
)
def test_no_body_for_204_205_and_304(answer: dict) -> None:
    config = validate_responses({"default": answer})
    planned = plan.plan(config, incoming(), count=lambda r: 1)  # type: ignore[arg-type]
    assert planned.status == answer["status"]
    assert (planned.body, planned.payload, planned.content_type) == (b"", None, None)


# --- templates ------------------------------------------------------------------------------------


def render(template: str, **kwargs: object) -> str:
    return render_template(template, incoming(**kwargs))  # type: ignore[arg-type]


def test_template_context() -> None:
    request = dict(
        method="POST",
        path="/slack/events",
        query="a=1&a=2&b=",
        headers=[("X-Trace", "t1"), ("x-trace", "t2"), ("Content-Type", "application/json")],
        body=b'{"challenge": "3eZbrw1a", "items": [1, 2], "n": 21}',
        content_type="application/json",
    )
    assert render("{{ method }} {{ path }}", **request) == "POST /slack/events"
    assert render("{{ query.a }}|{{ query.b }}|{{ query|tojson }}", **request) == (
        '1||{"a": "1", "b": ""}'
    )
    assert render("{{ headers['X-TRACE'] }} {{ headers.get('x-trace') }}", **request) == "t1 t1"
    assert render('{"challenge": "{{ json.challenge }}"}', **request) == (
        '{"challenge": "3eZbrw1a"}'
    )
    # A JSON field called like a method is the field.
    assert render("{{ json.items }} {{ json.n * 2 }}", **request) == "[1, 2] 42"
    assert render("{% if json.n > 20 %}big{% else %}small{% endif %}", **request) == "big"
    assert render("{{ json.missing|default('none') }}", **request) == "none"
    assert render("{{ form|tojson }}", **request) == "{}"
    form = dict(
        body=b"command=%2Fdeploy&text=a+b", content_type="application/x-www-form-urlencoded"
    )
    assert render("{{ form.command }} {{ form.text|upper }}", **form) == "/deploy A B"
    assert render("{{ json }}", body=b"not json") == "null"
    assert render("{{ body }}", body=b"caf\xc3\xa9 \xff") == "caf\u00e9 \ufffd"


def test_tojson_is_safe_to_embed() -> None:
    body = json.dumps({"challenge": 'a"b\\c</script>'}).encode()
    text = render('{"challenge": {{ json.challenge|tojson }}}', body=body)
    assert json.loads(text) == {"challenge": 'a"b\\c</script>'}
    assert "</script>" not in text


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ body.__class__ }}",
        "{{ json.__class__.__init__.__globals__ }}",
        "{{ headers.__class__ }}",
        "{{ headers.get.__self__ }}",
        "{{ headers.get.__globals__ }}",
        "{{ body['__class__'] }}",
        "{{ json['__class__'] }}",
        "{{ ''.format }}",
        "{{ ''.format('{0.__class__}', body) }}",
        "{{ ''.join }}",
        "{{ cycler }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum }}",
        "{{ joiner }}",
        "{{ namespace }}",
        "{{ range(3) }}",
        "{{ dict(a=1) }}",
        "{{ config }}",
        "{{ request }}",
        "{{ self }}",
        "{{ self._TemplateReference__context }}",
        "{{ body|attr('__class__') }}",
    ],
)
def test_templates_cannot_reach_python_objects(template: str) -> None:
    # Rendered directly (as if validation had been bypassed): the sandbox alone must hold.
    with pytest.raises(AnswerError) as caught:
        render(template, body=b'{"a": 1}', headers=[("X-A", "1")])
    message = str(caught.value)
    assert message.startswith("response template failed")
    for leak in ("<class", "<function", "<built-in", "<bound", "object at 0x", "__builtins__"):
        assert leak not in message
    # Saving it is refused too, wherever that can be told from the template alone (``x.format``
    # may be a JSON field called "format", so only rendering can tell).
    if template not in ("{{ ''.format }}", "{{ ''.join }}"):
        refused({"default": {"body": template}})


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ 'a' * 300000 }}", "longer than"),
        ("{{ [1] * 300000 }}", "longer than"),
        ("{{ 10 ** 5000 }}", "number too large"),
        ("{{ '%999999999s' % 'a' }}", "% is not allowed"),
        ("{{ body|replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxx') }}", "longer than"),
        ("{{ [body, body]|join('-') }}", "longer than"),
        ("{{ [body, body]|tojson }}", "longer than"),
        ("{{ body }}{{ body }}", "longer than"),
        ("{{ body + body }}", "longer than"),
    ],
)
def test_templates_cannot_build_huge_values(template: str, reason: str) -> None:
    with pytest.raises(AnswerError, match=reason):
        render(template, body=b"x" * 200_000)


@pytest.mark.parametrize(
    "item",
    ["[1] * 262144", "body * 2", "body[1:]", "body.lower()", "body.strip()", "body|lower"],
)
def test_values_held_side_by_side_count_against_one_budget(item: str) -> None:
    # Each value alone is within the limits, but hundreds of them in one list would hold
    # gigabytes at once ([1] * 262144 alone is 2 MB of pointers; body[1:] copies the body).
    template = "{{ [" + ", ".join([item] * 40) + "]|length }}"
    validate_responses({"default": {"body": template}})
    with pytest.raises(AnswerError, match="characters built in all"):
        render(template, body=b"x" * 100_000)
    # A few of them are fine, and slices still slice.
    assert render("{{ [" + ", ".join([item] * 2) + "]|length }}", body=b"x" * 100_000) == "2"
    assert render("{{ body[1:3] }}{{ body[::-1][:2] }}", body=b"abcd") == "bcdc"


def test_rendered_header_values_stay_single_line() -> None:
    config = validate_responses({"default": {"headers": {"X-Echo": "{{ json.v }}"}}})
    planned = plan.plan(
        config,  # type: ignore[arg-type]
        incoming(body=json.dumps({"v": "a\r\nSet-Cookie: s=1"}).encode()),
        count=lambda r: 1,
    )
    assert planned.status == 500
    assert "header X-Echo" in planned.payload["error"]  # type: ignore[index]
    assert planned.headers == []


@pytest.mark.parametrize(
    "template",
    [
        "{% if json.n is odd %}odd{% endif %}",
        "{% if json.n is even %}even{% endif %}",
        "{% if json.n is divisibleby 3 %}three{% endif %}",
        "{% if 6 is divisibleby json.n %}three{% endif %}",
    ],
)
def test_number_tests_never_format_the_senders_text(template: str) -> None:
    # Jinja's own tests compute ``value % n``: on text that is printf formatting, so a sender
    # writing "%999999999s" would make every such test build a gigabyte.
    assert render(template, body=b'{"n": 3}') in ("odd", "", "three")
    with pytest.raises(AnswerError, match="expected a number, not a str value"):
        render(template, body=b'{"n": "%d"}')


#: Too deep to parse (brackets, prefixes, blocks) and only too deep to compile (long chains).
DEEP_TO_PARSE = [
    "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
    "{{ " + "[" * 300 + "]" * 300 + " }}",
    "{% if " + "not " * 2000 + "body %}x{% endif %}",
    "{{ " + "-" * 200 + "1 }}",
    "{{ " + "1 if body else " * 200 + "2 }}",
    "{% if body %}" * 200 + "x" + "{% endif %}" * 200,
]
DEEP_TO_COMPILE = [
    "{{ " + " + ".join(["1"] * 250) + " }}",
    "{{ body" + "|lower" * 200 + " }}",
    "{{ body" + "|lower" * 250 + " }}",
    "{{ body" + ".lower()" * 100 + " }}",
    "{% if " + " or ".join(["body"] * 100) + " %}x{% endif %}",
]
TOO_DEEP = "default.body: template error: expressions are nested too deeply"


@pytest.mark.parametrize("template", DEEP_TO_PARSE + DEEP_TO_COMPILE)
def test_deeply_nested_templates_are_refused_with_a_message(template: str) -> None:
    assert refused({"default": {"body": template}}) == TOO_DEEP


@pytest.mark.parametrize("template", DEEP_TO_PARSE + DEEP_TO_COMPILE)
def test_deep_templates_are_refused_before_they_are_compiled(
    template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compiling a deep tree is what costs seconds: a refused template must never get there.
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a template too deep to keep reached the compiler")

    monkeypatch.setattr(sandbox.ENV, "compile", never)
    if template in DEEP_TO_PARSE:
        # Parsing recurses per level: these are refused from their tokens alone.
        monkeypatch.setattr(sandbox.ENV, "parse", never)
    assert refused({"default": {"body": template}}) == TOO_DEEP


def test_nesting_up_to_the_limit_is_kept() -> None:
    deepest = MAX_TEMPLATE_NESTING
    kept = [
        "{{ " + "(" * deepest + "body" + ")" * deepest + " }}",
        "{{ body" + "|lower" * (deepest - 2) + " }}",  # the output and the name are levels too
        "{% if body %}" * (deepest - 2) + "{{ body }}" + "{% endif %}" * (deepest - 2),
        # Prefixes count per list item and per tag: long lists and many tags stay shallow.
        "{{ [" + ", ".join(["-1"] * 200) + "]|length }}",
        "{% if json.n is not odd and json.a not in [1] and not json.b %}y{% endif %}" * 20,
    ]
    for template in kept:
        validate_responses({"default": {"body": template}})
    assert render(kept[1], body=b"AbC") == "abc"
    assert render(kept[2], body=b"x") == "x"
    too_deep = [
        "{{ " + "(" * (deepest + 1) + "body" + ")" * (deepest + 1) + " }}",
        "{{ body" + "|lower" * (deepest - 1) + " }}",
        "{% if body %}" * (deepest - 1) + "{{ body }}" + "{% endif %}" * (deepest - 1),
    ]
    for template in too_deep:
        assert refused({"default": {"body": template}}) == TOO_DEEP


def test_lone_surrogates_are_refused_in_settings() -> None:
    message = refused({"default": {"body": "x\ud800 {{ body }}"}})
    assert message == "default.body: may not contain unpaired surrogates (\\ud800-\\udfff)"
    message = refused({"rules": [{"header": {"name": "X-A", "equals": "\udcff"}}]})
    assert "unpaired surrogates" in message


def test_lone_surrogates_from_the_sender_are_written_as_replacement_characters() -> None:
    config = validate_responses({"default": {"body": "{{ json.a }} {{ json|tojson }}"}})
    planned = plan.plan(
        config,  # type: ignore[arg-type]
        incoming(body=b'{"a": "x\\ud800y"}'),
        count=lambda r: 1,
    )
    assert planned.status == 200
    assert planned.body == 'x\ufffdy {"a": "x\ufffdy"}'.encode()


def test_json_field_indexes_are_ascii_digits() -> None:
    rules = validate_responses(
        {
            "rules": [
                {"id": "sup", "json": {"field": "a.\u00b2", "present": True}},
                {"id": "one", "json": {"field": "a.1", "equals": 2}},
            ]
        }
    )["rules"]  # type: ignore[index]
    # "\u00b2".isdigit() is true but int() refuses it: a match must not reach int().
    assert choose(rules, incoming(body=b'{"a": [1, 2, 3]}'))["id"] == "one"  # type: ignore[index]
    assert choose(rules, incoming(body=b'{"a": {"\xc2\xb2": 1}}'))["id"] == "sup"  # type: ignore[index]


def test_settings_form_refuses_deeply_nested_rules_json() -> None:
    from app.rules import form as answerform

    with pytest.raises(ValueError, match="rules are not valid JSON: nested too deeply"):
        answerform.from_form({answerform.MARKER: "1", "resp_rules": "[" * 100_000})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_json_equals_must_be_a_finite_number(value: float) -> None:
    message = refused({"rules": [{"json": {"field": "a", "equals": value}}]})
    assert message == "rules[0].json.equals must be a string, number, true, false or null"


# --- the rule counter on an SQLite file -----------------------------------------------------------


def test_rule_counter_is_atomic_across_processes_sharing_the_file(tmp_path: Path) -> None:
    from app.config import Settings
    from app.rules.hits import BinGone, RuleHits
    from app.storage import store
    from app.storage.db import make_engine, rule_hits
    from app.storage.migrate import upgrade
    from app.storage.repository import Storage
    from app.storage.writes import SerialWrites

    url = f"sqlite:///{tmp_path / 'hits.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    bin_id = store.create_bin(engine)["id"]
    settings = Settings(database_url=url)
    # Two counters stand for two processes: each has its own connection and lock file descriptor.
    counters = [RuleHits(Storage(engine, SerialWrites(settings, engine))) for _ in range(2)]
    seen: list[int] = []
    lock = threading.Lock()

    def bump_many(counter: RuleHits) -> None:
        for _ in range(25):
            value = counter.bump(bin_id, "flaky")
            with lock:
                seen.append(value)

    threads = [threading.Thread(target=bump_many, args=(counters[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 101))  # every value handed out exactly once

    # Saving responses starts the bin's counters over.
    store.update_bin(engine, bin_id, responses=None)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rule_hits)).scalar() == 0
    assert counters[0].bump(bin_id, "flaky") == 1

    store.delete_bin(engine, bin_id)
    with pytest.raises(BinGone):
        counters[1].bump(bin_id, "flaky")
    engine.dispose()


@pytest.mark.postgres
def test_rule_counter_on_postgres(postgres_url: str) -> None:
    from app.config import Settings
    from app.rules.hits import BinGone, RuleHits
    from app.storage import store
    from app.storage.db import make_engine
    from app.storage.repository import Storage
    from app.storage.writes import SerialWrites

    engine = make_engine(postgres_url)
    try:
        bin_id = store.create_bin(engine)["id"]
        counter = RuleHits(
            Storage(engine, SerialWrites(Settings(database_url=postgres_url), engine))
        )
        assert [counter.bump(bin_id, "r") for _ in range(3)] == [1, 2, 3]
        assert counter.bump(bin_id, "other") == 1
        store.update_bin(engine, bin_id, responses=None)
        assert counter.bump(bin_id, "r") == 1
        with pytest.raises(BinGone):
            counter.bump("no-such-bin", "r")
    finally:
        engine.dispose()


# --- a real server --------------------------------------------------------------------------------


def set_responses(server: Server, bin_id: str, responses: object) -> dict:
    response = httpx.patch(
        f"{server.url}/api/bins/{bin_id}", json={"responses": responses}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def stored_items(server: Server, bin_id: str) -> list[dict]:
    response = httpx.get(f"{server.url}/api/bins/{bin_id}/requests?limit=500", timeout=10)
    assert response.status_code == 200
    return response.json()["items"]


def header_lines(answer: bytes, name: str) -> list[str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if line.split(":", 1)[0].lower() == name.lower()
    ]


def test_standard_acknowledgement_without_responses(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    assert bin_["responses"] is None
    answer = httpx.post(bin_["capture_url"], content=b"hi", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "request_id": answer.headers["x-hookbin-request-id"]}
    [item] = stored_items(shared_server, bin_["id"])
    assert item["answer"] == {"status": 200, "rule": None}


def test_default_answer(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    saved = set_responses(
        shared_server,
        bin_["id"],
        {
            "default": {
                "status": 202,
                "content_type": "application/json",
                "headers": {"X-Env": "test", "Retry-After": "7"},
                "body": '{"accepted": true, "method": "{{ method }}"}',
            }
        },
    )
    assert saved["responses"]["default"]["status"] == 202
    shown = httpx.get(f"{shared_server.url}/api/bins/{bin_['id']}", timeout=10).json()
    assert shown["responses"] == saved["responses"]

    answer = httpx.put(bin_["capture_url"] + "/any/path", content=b"x", timeout=10)
    assert answer.status_code == 202
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"accepted": True, "method": "PUT"}
    assert answer.headers["x-env"] == "test" and answer.headers["retry-after"] == "7"
    [item] = stored_items(shared_server, bin_["id"])
    assert item["id"] == answer.headers["x-hookbin-request-id"]
    assert item["answer"] == {"status": 202, "rule": None}

    head = httpx.head(bin_["capture_url"], timeout=10)
    assert head.status_code == 202 and head.content == b""

    # null clears it: back to the standard acknowledgement.
    assert set_responses(shared_server, bin_["id"], None)["responses"] is None
    again = httpx.post(bin_["capture_url"], timeout=10)
    assert again.status_code == 200 and again.json()["ok"] is True


def test_rule_order_and_conditions(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    set_responses(
        shared_server,
        bin_["id"],
        {
            "default": {"status": 200, "body": "default"},
            "rules": [
                {
                    "id": "slack",
                    "method": "POST",
                    "path": "/slack/**",
                    "json": {"field": "type", "equals": "url_verification"},
                    "answer": {
                        "content_type": "application/json",
                        "body": '{"challenge": {{ json.challenge|tojson }}}',
                    },
                },
                {
                    "id": "push",
                    "header": {"name": "X-GitHub-Event", "equals": "push"},
                    "answer": {"status": 201, "body": "push {{ headers['x-github-delivery'] }}"},
                },
                {"id": "reset", "path": "/form/reset", "answer": {"status": 205, "body": "x"}},
                {"id": "github", "path": "/github/*", "answer": {"status": 204}},
            ],
        },
    )
    url = bin_["capture_url"]
    slack = httpx.post(
        url + "/slack/events", json={"type": "url_verification", "challenge": "3eZbrw1a"}
    )
    assert slack.status_code == 200 and slack.json() == {"challenge": "3eZbrw1a"}
    event = httpx.post(url + "/slack/events", json={"type": "event_callback"})
    assert event.text == "default"

    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
    push = httpx.post(url + "/github/hook", headers=headers, content=b"{}")
    assert push.status_code == 201 and push.text == "push d-1"  # earlier rule wins
    ping = httpx.post(url + "/github/hook", headers={"X-GitHub-Event": "ping"})
    assert ping.status_code == 204 and ping.content == b""
    assert "content-length" not in ping.headers
    reset = httpx.post(url + "/form/reset")
    assert reset.status_code == 205 and reset.content == b""
    assert reset.headers["content-length"] == "0"

    answered = [(i["path"], i["answer"]) for i in reversed(stored_items(shared_server, bin_["id"]))]
    assert answered == [
        ("/slack/events", {"status": 200, "rule": "slack"}),
        ("/slack/events", {"status": 200, "rule": None}),
        ("/github/hook", {"status": 201, "rule": "push"}),
        ("/github/hook", {"status": 204, "rule": "github"}),
        ("/form/reset", {"status": 205, "rule": "reset"}),
    ]


def test_template_error_answers_500_and_keeps_the_capture(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    set_responses(
        shared_server,
        bin_["id"],
        {"rules": [{"id": "slack", "answer": {"body": "{{ json.challenge }}"}}]},
    )
    answer = httpx.post(bin_["capture_url"], content=b"not json", timeout=10)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error.startswith("response template failed (rule slack, body)")
    [item] = stored_items(shared_server, bin_["id"])
    assert item["id"] == answer.json()["request_id"]
    assert item["answer"] == {"status": 500, "rule": "slack"}


def test_fail_first_then_succeed_and_saving_starts_over(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    rules = [
        {
            "id": "fail-twice",
            "path": "/stripe/*",
            "fail_first": {"count": 2, "status": 503},
            "answer": {"status": 200, "body": "finally"},
        }
    ]
    set_responses(shared_server, bin_["id"], {"rules": rules})
    url = bin_["capture_url"] + "/stripe/webhook"
    statuses = [httpx.post(url, content=b"{}", timeout=10).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    # Other paths do not count.
    assert httpx.post(bin_["capture_url"] + "/other", timeout=10).status_code == 200

    failed = httpx.post(url, timeout=10)
    assert failed.text == "finally"

    set_responses(shared_server, bin_["id"], {"rules": rules})  # saved again: counts start over
    first = httpx.post(url, timeout=10)
    assert first.status_code == 503
    assert first.json()["error"] == (
        "simulated failure by response rule fail-twice (failure 1 of 2)"
    )
    answers_seen = [
        (i["path"], i["answer"]["status"], i["answer"]["rule"])
        for i in reversed(stored_items(shared_server, bin_["id"]))
    ]
    stripe = ("/stripe/webhook", "fail-twice")
    assert answers_seen == [
        (stripe[0], 503, stripe[1]),
        (stripe[0], 503, stripe[1]),
        (stripe[0], 200, stripe[1]),
        (stripe[0], 200, stripe[1]),
        ("/other", 200, None),
        (stripe[0], 200, stripe[1]),
        (stripe[0], 503, stripe[1]),
    ]


def _count_across_workers(database_url: str, tmp_path: Path) -> None:
    server = start_server(database_url, tmp_path, workers=2)
    try:
        bin_ = server.create_bin()
        set_responses(
            server,
            bin_["id"],
            {"rules": [{"id": "five", "fail_first": {"count": 5, "status": 503}}]},
        )
        results: list[int] = []
        lock = threading.Lock()

        def send() -> None:
            # A new connection each time, so the two workers share the requests between them.
            status = httpx.post(bin_["capture_url"], content=b"x", timeout=30).status_code
            with lock:
                results.append(status)

        threads = [threading.Thread(target=send) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200] * 19 + [503] * 5
        items = stored_items(server, bin_["id"])
        assert len(items) == 24
        assert sum(1 for i in items if i["answer"]["status"] == 503) == 5
    finally:
        server.stop()


def test_fail_first_counts_across_two_workers_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    _count_across_workers(sqlite_url, tmp_path)


@pytest.mark.postgres
def test_fail_first_counts_across_two_workers_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    _count_across_workers(postgres_url, tmp_path)


def test_fail_random_probability_zero_and_one(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    set_responses(
        shared_server,
        bin_["id"],
        {
            "rules": [
                {
                    "id": "never",
                    "path": "/never",
                    "fail_random": {"probability": 0, "status": 500},
                    "answer": {"body": "fine"},
                },
                {
                    "id": "always",
                    "path": "/always",
                    "fail_random": {"probability": 1, "status": 429},
                },
            ]
        },
    )
    url = bin_["capture_url"]
    never = [httpx.post(url + "/never", timeout=10) for _ in range(5)]
    always = [httpx.post(url + "/always", timeout=10) for _ in range(5)]
    assert [(a.status_code, a.text) for a in never] == [(200, "fine")] * 5
    assert [a.status_code for a in always] == [429] * 5
    assert all("rule always" in a.json()["error"] for a in always)


def test_delay_does_not_hold_up_the_worker(server: Server) -> None:
    """One gevent worker: while one answer is held back, the same worker answers others."""
    bin_ = server.create_bin()
    set_responses(
        server,
        bin_["id"],
        {"rules": [{"id": "slow", "path": "/slow", "answer": {"body": "slow", "delay": 8}}]},
    )
    slow: dict[str, httpx.Response] = {}
    slow_done = threading.Event()

    def send_slow() -> None:
        slow["answer"] = httpx.post(bin_["capture_url"] + "/slow", content=b"s", timeout=60)
        slow_done.set()

    sender = threading.Thread(target=send_slow)
    sender.start()
    # The capture is committed before the delay starts: it shows up while the sender waits.
    deadline = time.monotonic() + 30
    while not stored_items(server, bin_["id"]):
        assert time.monotonic() < deadline, "the delayed capture was never stored"
        time.sleep(0.05)
    fast = httpx.post(bin_["capture_url"] + "/fast", content=b"f", timeout=60)
    assert fast.status_code == 200
    assert not slow_done.is_set(), "the delayed answer should still be held back"
    sender.join()
    assert slow["answer"].status_code == 200 and slow["answer"].text == "slow"
    [fast_item, slow_item] = stored_items(server, bin_["id"])
    assert slow_item["path"] == "/slow" and slow_item["answer"] == {"status": 200, "rule": "slow"}
    assert fast_item["answer"] == {"status": 200, "rule": None}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Set-Cookie": "session=1"}, "Set-Cookie would act on the whole Hookbin origin"),
        ({"Content-Length": "1"}, "Content-Length is set by the server"),
        ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding is set by the server"),
        ({"Connection": "close"}, "Connection is set by the server"),
        ({"Content-Security-Policy": "default-src *"}, "is set by Hookbin"),
        ({"X-Content-Type-Options": "sniff"}, "is set by Hookbin"),
        ({"X-Ok": "a\r\nSet-Cookie: s=1"}, "without line breaks"),
    ],
)
def test_forbidden_headers_are_refused_by_the_api(
    shared_server: Server, headers: dict, message: str
) -> None:
    bin_ = shared_server.create_bin()
    response = httpx.patch(
        f"{shared_server.url}/api/bins/{bin_['id']}",
        json={"responses": {"default": {"headers": headers}}},
        timeout=10,
    )
    assert response.status_code == 400
    assert message in response.json()["error"]
    shown = httpx.get(f"{shared_server.url}/api/bins/{bin_['id']}", timeout=10).json()
    assert shown["responses"] is None


def test_bad_templates_are_refused_by_the_api(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    response = httpx.patch(
        f"{shared_server.url}/api/bins/{bin_['id']}",
        json={"responses": {"rules": [{}, {"answer": {"body": "{{ ''.__class__ }}"}}]}},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == 'rules[1].answer.body: "__class__" cannot be read'


def test_every_answer_stays_inert(shared_server: Server) -> None:
    """An HTML answer that echoes the request still comes with CSP sandbox and nosniff, once."""
    bin_ = shared_server.create_bin()
    set_responses(
        shared_server,
        bin_["id"],
        {
            "default": {
                "content_type": "text/html",
                "headers": {"X-Echo": "{{ query.x }}"},
                "body": "<script>alert(1)</script>{{ body }}",
            },
            "rules": [{"id": "fail", "path": "/fail", "fail_first": {"count": 1, "status": 500}}],
        },
    )
    body = b"<img src=x onerror=alert()>"
    for path in (f"/h/{bin_['id']}/page?x=1", f"/h/{bin_['id']}/fail"):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: example.test\r\nContent-Length: {len(body)}\r\n"
            "Set-Cookie: sent=by-the-sender\r\nConnection: close\r\n\r\n"
        )
        answer = raw_http(shared_server.port, head.encode() + body)
        assert answer.startswith(b"HTTP/1.1 200 " if path.endswith("x=1") else b"HTTP/1.1 500 ")
        assert header_lines(answer, "Content-Security-Policy") == ["sandbox; default-src 'none'"]
        assert header_lines(answer, "X-Content-Type-Options") == ["nosniff"]
        assert header_lines(answer, "Set-Cookie") == []
    page = httpx.post(bin_["capture_url"] + "/page?x=1", content=b"<b>", timeout=10)
    assert page.headers["content-type"] == "text/html"
    assert page.text == "<script>alert(1)</script><b>"


def test_hostile_json_never_costs_a_capture(shared_server: Server) -> None:
    """Values a sender controls can fail a template (500), never the capture itself (503)."""
    bin_ = shared_server.create_bin()
    set_responses(
        shared_server,
        bin_["id"],
        {
            "default": {"body": "{{ json.a }}"},
            "rules": [
                {"id": "sup", "path": "/sup", "json": {"field": "a.\u00b2", "present": True}},
                {
                    "id": "odd",
                    "path": "/odd",
                    "answer": {"body": "{% if json.a is odd %}1{% endif %}"},
                },
            ],
        },
    )
    url = bin_["capture_url"]
    echo = httpx.post(url, content=b'{"a": "\\ud800"}', timeout=10)
    assert echo.status_code == 200 and echo.content == "\ufffd".encode()
    assert httpx.post(url + "/sup", content=b'{"a": [1]}', timeout=10).status_code == 200
    odd = httpx.post(url + "/odd", content=b'{"a": "%99999999s"}', timeout=10)
    assert odd.status_code == 500 and "expected a number" in odd.json()["error"]
    assert [i["answer"]["status"] for i in stored_items(shared_server, bin_["id"])] == [
        500,
        200,
        200,
    ]


def test_a_bug_in_the_rules_never_costs_the_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error while deciding the answer still stores the request (answered 500)."""
    from app import create_app
    from app.config import Settings
    from app.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'bug.sqlite3'}"
    upgrade(url)
    app = create_app(Settings(database_url=url, admin_token=TEST_OPERATOR))
    try:
        client = app.test_client()
        bin_id = client.post("/api/bins").get_json()["id"]
        responses = {"default": {"status": 201, "body": "created"}}
        assert client.patch(f"/api/bins/{bin_id}", json={"responses": responses}).status_code == 200

        def broken(*_args: object, **_kwargs: object) -> plan.Planned:
            raise RuntimeError("a bug")

        monkeypatch.setattr(plan, "plan", broken)
        response = client.post(f"/h/{bin_id}/hook", data=b"keep me")
        assert response.status_code == 500
        request_id = response.get_json()["request_id"]
        [item] = client.get(f"/api/bins/{bin_id}/requests").get_json()["items"]
        assert item["id"] == request_id
        assert item["answer"] == {"status": 500, "rule": None}
        assert client.get(f"/api/requests/{request_id}/body").data == b"keep me"
    finally:
        app.extensions["hookbin"].close()
