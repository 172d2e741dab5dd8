"""The API answers as docs/openapi.yaml says, for requests the document allows and for ones it
does not: schemathesis generates both from the document the app serves and runs every check on
the in-process WSGI app.

The capture URLs (``/h/...``) are left out: they take any method and any body by design.
Every generated call carries an operator token, so that it reaches the operation rather than
its ``401``; schemathesis also sends each operation that answered 2xx again without a token and
with a wrong one, which must be refused. Path parameters are sometimes swapped for the id of a
real bin, request or share link, so that operations are exercised past their ``404``.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from tests.conftest import TEST_OPERATOR

load_all_checks()
ALL_CHECKS = CHECKS.get_all()
WEBSOCKETS = {"/api/bins/{bin_id}/stream", "/bins/{bin_id}/live"}
OPERATOR = {"Authorization": f"Bearer {TEST_OPERATOR}"}


def _make_app() -> tuple[Flask, tempfile.TemporaryDirectory[str]]:
    from app import create_app
    from app.config import Settings
    from app.storage.migrate import upgrade

    folder = tempfile.TemporaryDirectory(prefix="hookbin-contract-")
    url = f"sqlite:///{folder.name}/x.sqlite3"
    upgrade(url)
    flask_app = create_app(Settings(database_url=url, admin_token=TEST_OPERATOR))
    # A server error reaches the test as the exception itself, and so does the one below.
    flask_app.config["PROPAGATE_EXCEPTIONS"] = True
    return flask_app, folder


# Loaded when the module is collected: schemathesis makes one test per operation from a schema
# it has at that time (its fixture-based loader does not run under this pytest).
APP, _FOLDER = _make_app()
schema = schemathesis.openapi.from_wsgi("/api/openapi.yaml", APP).exclude(path_regex=r"^/h/")


@schema.auth()
class Operator:
    """Every generated call is an operator's (the document's ``bearerAuth``)."""

    def get(self, case: schemathesis.Case, ctx: object) -> str:
        return TEST_OPERATOR

    def set(self, case: schemathesis.Case, data: str, ctx: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module", autouse=True)
def _close_app() -> Iterator[None]:
    yield
    APP.extensions["hookbin"].close()
    _FOLDER.cleanup()


@pytest.fixture(scope="module")
def known_ids() -> dict[str, str]:
    """A real bin with one captured request and one share link, for path parameters."""
    client = APP.test_client()
    bin_id = client.post("/api/bins", headers=OPERATOR).get_json()["id"]
    request_id = client.post(f"/h/{bin_id}/x", data=b'{"a": 1}').get_json()["request_id"]
    share_id = client.post(f"/api/bins/{bin_id}/shares", headers=OPERATOR).get_json()["id"]
    return {"bin_id": bin_id, "request_id": request_id, "share_id": share_id}


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_agrees_with_its_document(case: schemathesis.Case, known_ids: dict[str, str]) -> None:
    # Half the cases name real objects (derandomized: the same cases every run).
    chooser = random.Random(repr(case.path_parameters))
    for name, value in known_ids.items():
        if case.path_parameters and name in case.path_parameters and chooser.random() < 0.5:
            case.path_parameters[name] = value
    try:
        case.call_and_validate(checks=ALL_CHECKS)
    except RuntimeError as exc:
        # A complete websocket handshake for a real bin passed every check and reached the
        # websocket library, which needs the server's socket; an in-process WSGI call has none.
        # On a server this is the documented 101.
        if case.operation.path not in WEBSOCKETS or "Cannot obtain socket" not in str(exc):
            raise
