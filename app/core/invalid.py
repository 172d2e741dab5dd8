"""``Invalid``: the one error every check of user input raises (bin settings, paging, reported
attempts), so that the page and the API can answer each the same way."""

from __future__ import annotations


class Invalid(ValueError):
    """A value that cannot be used; ``str(exc)`` names the field and says what is expected.

    ``status`` is the HTTP status the API answers with: 400 for a malformed value, 422 for a
    well-formed one that cannot be acted on.
    """

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status
