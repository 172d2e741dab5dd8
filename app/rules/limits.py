"""Limits and formats of a ``responses`` setting, shared by validation, templates and answers."""

from __future__ import annotations

import re

MAX_RULES = 50
MAX_HEADERS = 32
MAX_TEMPLATE_CHARS = 8 * 1024
#: Deepest nesting of one template (expressions and ``if`` blocks together). Jinja's compiler
#: works much harder on deep trees than on long flat ones, so depth is bounded on its own.
MAX_TEMPLATE_NESTING = 32
#: Largest rendered body, and largest text any template operation may build on the way.
MAX_RENDERED_CHARS = 256 * 1024
#: Characters (or list items) all template operations may build in all while rendering one
#: template: values held side by side (``[x * n, x * n, ...]``) add up long before any is written.
MAX_BUILT_CHARS = 8 * MAX_RENDERED_CHARS
MAX_HEADER_VALUE_CHARS = 4096
MAX_DELAY_SECONDS = 30.0
MAX_FAIL_COUNT = 100_000
MAX_CONFIG_CHARS = 256 * 1024
#: Largest integer ``**`` may build, in bits.
MAX_POW_BITS = 4096

DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"

#: Names a template can read. Anything else is refused when the template is saved.
CONTEXT_NAMES = ("method", "path", "query", "headers", "json", "form", "body")

#: HTTP forbids a body in these answers (RFC 9110 15.3.5, 15.3.6, 15.4.5).
NO_BODY_STATUSES = frozenset({204, 205, 304})

#: A header value: visible ASCII, space, tab and Latin-1 high bytes; never CR, LF or NUL.
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")
#: Text that is not UTF-8: an answer or the bin's page could never be written out.
SURROGATE = re.compile("[\ud800-\udfff]")
