"""docs/openapi.yaml documents every /api route the app really has, and the app serves it.

The check reads the YAML's ``paths:`` section line by line (two-space indentation: paths at
column 2, operations at column 4), so it needs no YAML library. When PyYAML happens to be
importable (webassets pulls it in today) the file is also parsed for real and compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import TEST_OPERATOR

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
IMPLICIT = {"HEAD", "OPTIONS"}  # added by Flask to every rule


def documented_operations(text: str) -> dict[str, set[str]]:
    """``{path: {methods}}`` from the ``paths:`` section of the spec text."""
    out: dict[str, set[str]] = {}
    in_paths = False
    current: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):  # a top-level key
            in_paths = line.rstrip() == "paths:"
            continue
        if not in_paths:
            continue
        if match := re.fullmatch(r"  (['\"]?)(/\S*)\1:\s*", line):
            current = match.group(2)
            out[current] = set()
        elif current and (match := re.fullmatch(r"    ([a-z]+):\s*", line)):
            out[current].add(match.group(1))
    # Path-item keys that are not operations (parameters, description, ...) are dropped here.
    return {path: keys & HTTP_METHODS for path, keys in out.items()}


def openapi_path(rule: str) -> str:
    """Flask ``/api/bins/<bin_id>`` (or ``<string:bin_id>``) -> OpenAPI ``/api/bins/{bin_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    from app import create_app
    from app.config import Settings
    from app.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path}/x.sqlite3"
    upgrade(url)
    flask_app = create_app(Settings(database_url=url, admin_token=TEST_OPERATOR))
    yield flask_app
    flask_app.extensions["hookbin"].close()


def test_every_api_route_is_documented(app: Flask) -> None:
    documented = documented_operations(SPEC.read_text(encoding="utf-8"))
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            methods = {m.lower() for m in (rule.methods or set()) - IMPLICIT}
            routes.setdefault(openapi_path(rule.rule), set()).update(methods)

    # Sanity: the app really has the routes this test is about, websocket stream included.
    assert "/api/bins/{bin_id}/stream" in routes
    assert routes["/api/bins/{bin_id}"] == {"get", "patch", "delete"}

    missing = {
        path: sorted(methods - documented.get(path, set()))
        for path, methods in routes.items()
        if methods - documented.get(path, set())
    }
    assert not missing, f"routes missing from docs/openapi.yaml: {missing}"

    stale = sorted(p for p in documented if p.startswith("/api/") and p not in routes)
    assert not stale, f"docs/openapi.yaml documents /api paths the app does not have: {stale}"


def test_capture_urls_are_documented() -> None:
    documented = documented_operations(SPEC.read_text(encoding="utf-8"))
    for path in ("/h/{bin_id}", "/h/{bin_id}/{subpath}"):
        assert documented.get(path) == HTTP_METHODS, path


def test_spec_is_served(app: Flask) -> None:
    response = app.test_client().get("/api/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    assert response.get_data() == SPEC.read_bytes()


def test_line_reader_agrees_with_a_yaml_parser() -> None:
    yaml = pytest.importorskip("yaml")
    text = SPEC.read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    assert str(spec["openapi"]).startswith("3.1.")
    parsed = {
        path: {key for key in item if key in HTTP_METHODS} for path, item in spec["paths"].items()
    }
    assert parsed == documented_operations(text)

    def refs(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(spec):
        target = spec
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"dangling $ref {ref}"
            target = target[part]


def test_a_server_error_under_api_is_json(app: Flask) -> None:
    def boom() -> str:
        raise RuntimeError("boom")

    app.add_url_rule("/api/boom", "boom", boom)
    app.add_url_rule("/boom", "page_boom", boom)
    client = app.test_client()
    answer = client.get("/api/boom")
    assert answer.status_code == 500
    assert answer.get_json() == {"error": "internal server error"}
    page = client.get("/boom")  # outside /api, Flask's own error page as before
    assert page.status_code == 500 and page.mimetype == "text/html"
