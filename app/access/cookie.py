"""The browser's bins: a signed, HttpOnly cookie listing the bins this browser may open.

The cookie holds grants, not secrets: ``{bin id: "manage" | "share:<id>"}``, signed with the
deployment's own key so that it cannot be forged. A "manage" grant comes from creating the bin in
this browser or opening its view link; a share grant is re-checked on every use, so revoking the
share link ends it.
"""

from __future__ import annotations

from collections.abc import Mapping

from itsdangerous import BadSignature, URLSafeSerializer

NAME = "hookbin_bins"
#: Bins remembered at most (the newest are kept): a cookie must stay under 4 KB.
MAX_BINS = 60
MAX_AGE_SECONDS = 365 * 24 * 3600


def _serializer(deployment_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(deployment_key, salt="hookbin-bins")


def read(deployment_key: str, value: str | None) -> dict[str, str]:
    """The grants in a cookie value; an empty dict for a missing, forged or malformed one."""
    if not value or len(value) > 8192:
        return {}
    try:
        data = _serializer(deployment_key).loads(value)
    except BadSignature:
        return {}
    if not isinstance(data, list):
        return {}
    return {
        item[0]: item[1]
        for item in data
        if isinstance(item, list)
        and len(item) == 2
        and all(isinstance(part, str) and len(part) <= 80 for part in item)
    }


def write(deployment_key: str, grants: Mapping[str, str]) -> str:
    """A cookie value for ``grants``, in insertion order, keeping the newest ``MAX_BINS``."""
    items = [[bin_id, grant] for bin_id, grant in grants.items()][-MAX_BINS:]
    return _serializer(deployment_key).dumps(items)


def with_grant(grants: Mapping[str, str], bin_id: str, grant: str) -> dict[str, str]:
    """``grants`` with ``bin_id`` (re)added as the newest; "manage" is never lowered to a share."""
    updated = {k: v for k, v in grants.items() if k != bin_id}
    updated[bin_id] = "manage" if grants.get(bin_id) == "manage" else grant
    return updated


def without(grants: Mapping[str, str], bin_id: str) -> dict[str, str]:
    """``grants`` less ``bin_id``."""
    return {k: v for k, v in grants.items() if k != bin_id}
