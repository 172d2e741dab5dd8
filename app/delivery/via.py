"""The mark on everything Hookbin sends, so it never captures and forwards its own traffic again.

Every replay and auto-forward carries ``Hookbin-Via``: the ids of the deployments it has passed
through, oldest first. A capture that already carries this deployment's id is Hookbin's own
request come back (a target that is this server by another name: its IP, a proxy, ``localhost``
against the public URL); it is stored, so the user sees it, but not forwarded again. A chain
through several deployments is cut after ``MAX_HOPS`` as well.
"""

from __future__ import annotations

from collections.abc import Iterable

HEADER = "Hookbin-Via"
MAX_HOPS = 5
_MAX_ID = 64


def path_of(headers: Iterable[tuple[str, str]] | Iterable[list[str]]) -> list[str]:
    """The deployment ids a request has passed through, from its ``Hookbin-Via`` headers."""
    ids: list[str] = []
    for name, value in headers:
        if name.lower() == HEADER.lower():
            ids.extend(part.strip()[:_MAX_ID] for part in value.split(",") if part.strip())
    return ids


def looped(headers: Iterable[tuple[str, str]] | Iterable[list[str]], own_id: str) -> bool:
    """Whether a captured request came from this deployment, or has hopped too often to forward."""
    ids = path_of(headers)
    return own_id in ids or len(ids) >= MAX_HOPS


def marked(headers: list[tuple[str, str]], own_id: str) -> list[tuple[str, str]]:
    """``headers`` to send on, with this deployment added to ``Hookbin-Via`` (one header)."""
    ids = [i for i in path_of(headers) if i != own_id][-(MAX_HOPS - 1) :]
    kept = [(n, v) for n, v in headers if n.lower() != HEADER.lower()]
    return [*kept, (HEADER, ", ".join([*ids, own_id]))]
