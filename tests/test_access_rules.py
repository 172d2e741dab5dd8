"""Who may do what with a bin, as plain rules: tokens, share keys, view links, the cookie."""

from __future__ import annotations

import pytest

from app.access import cookie, keys
from app.access.grants import Credentials, Grant, grant_for

OPERATORS = ("op-token-1", "op-token-2")


def _bin(bin_id: str = "b1", token: str | None = None, salt: str | None = "salt") -> dict:
    return {
        "id": bin_id,
        "token_hash": keys.digest(token) if token else None,
        "page_key_salt": salt,
    }


def _grant(bin_, credentials: Credentials, shares: dict | None = None) -> Grant:
    shares = shares or {}
    return grant_for(
        bin_,
        credentials,
        operator_tokens=OPERATORS,
        share_of=lambda digest: shares.get(digest),
        share_alive=lambda bin_id, share_id: any(
            s["id"] == share_id and s["bin_id"] == bin_id for s in shares.values()
        ),
    )


def test_secrets_are_long_random_and_stored_as_digests() -> None:
    tokens = {keys.new_token() for _ in range(200)}
    assert len(tokens) == 200
    token = tokens.pop()
    # 32 random bytes: at least 128 bits, URL-safe, recognisable by its prefix.
    assert token.startswith(keys.TOKEN_PREFIX) and len(token) >= 4 + 43
    assert keys.token_matches(token, keys.digest(token))
    assert not keys.token_matches(token + "x", keys.digest(token))
    assert not keys.token_matches(token, None)
    assert keys.digest(token) != token


def test_the_bin_token_manages_its_own_bin_only() -> None:
    mine, other = _bin("b1", "tok-1"), _bin("b2", "tok-2")
    assert _grant(mine, Credentials(bearer="tok-1")) is Grant.MANAGE
    assert _grant(other, Credentials(bearer="tok-1")) is Grant.NONE
    assert _grant(mine, Credentials()) is Grant.NONE
    assert _grant(mine, Credentials(bearer="")) is Grant.NONE
    # A bin made before tokens existed has none: a guess of "None" or empty never matches.
    legacy = _bin("old", None)
    assert _grant(legacy, Credentials(bearer="None")) is Grant.NONE


def test_operators_manage_every_bin_and_see_missing_ones() -> None:
    assert _grant(_bin(), Credentials(bearer="op-token-2")) is Grant.MANAGE
    assert _grant(None, Credentials(bearer="op-token-1")) is Grant.MANAGE
    assert _grant(None, Credentials(bearer="tok-1")) is Grant.NONE
    assert _grant(_bin(), Credentials(bearer="op-token-")) is Grant.NONE


def test_share_keys_read_their_own_bin_and_die_when_revoked() -> None:
    key = keys.new_share_key()
    share = {"id": "s1", "bin_id": "b1"}
    live = {keys.digest(key): share}
    assert _grant(_bin("b1"), Credentials(bearer=key), live) is Grant.READ
    assert _grant(_bin("b2"), Credentials(bearer=key), live) is Grant.NONE
    assert _grant(_bin("b1"), Credentials(bearer=key), {}) is Grant.NONE  # revoked
    # A share remembered by the browser's cookie is checked again on every use.
    remembered = Credentials(cookie={"b1": "share:s1"})
    assert _grant(_bin("b1"), remembered, live) is Grant.READ
    assert _grant(_bin("b1"), remembered, {}) is Grant.NONE


def test_the_cookie_is_signed_and_holds_grants_not_secrets() -> None:
    value = cookie.write("deployment-key", {"b1": "manage", "b2": "share:s1"})
    assert "deployment-key" not in value
    assert cookie.read("deployment-key", value) == {"b1": "manage", "b2": "share:s1"}
    assert cookie.read("another-deployment", value) == {}
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    assert cookie.read("deployment-key", tampered) == {}
    assert cookie.read("deployment-key", "garbage") == {}
    assert cookie.read("deployment-key", None) == {}
    held = cookie.read("deployment-key", value)
    assert _grant(_bin("b1"), Credentials(cookie=held)) is Grant.MANAGE
    assert _grant(_bin("b3"), Credentials(cookie=held)) is Grant.NONE


def test_the_cookie_keeps_the_newest_bins_and_never_lowers_a_grant() -> None:
    grants: dict[str, str] = {}
    for i in range(cookie.MAX_BINS + 10):
        grants = cookie.with_grant(grants, f"bin-{i}", "manage")
    kept = cookie.read("k", cookie.write("k", grants))
    assert len(kept) == cookie.MAX_BINS
    assert "bin-0" not in kept and f"bin-{cookie.MAX_BINS + 9}" in kept
    assert len(cookie.write("k", grants)) < 4000
    assert cookie.with_grant({"b": "manage"}, "b", "share:s")["b"] == "manage"
    assert cookie.without({"b": "manage", "c": "manage"}, "b") == {"c": "manage"}


@pytest.mark.parametrize("salt", ["a", "b"])
def test_view_link_keys_follow_the_salt(salt: str) -> None:
    key = keys.page_key("deployment-key", "b1", salt)
    assert key.startswith(keys.PAGE_KEY_PREFIX)
    assert keys.page_key_matches("deployment-key", "b1", salt, key)
    assert not keys.page_key_matches("deployment-key", "b1", salt + "new", key)  # revoked
    assert not keys.page_key_matches("deployment-key", "b2", salt, key)
    assert not keys.page_key_matches("another-key", "b1", salt, key)
    assert not keys.page_key_matches("deployment-key", "b1", None, key)
