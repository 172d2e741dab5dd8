"""The locked-down Jinja environment answer templates run in, and its filters.

Templates are written by whoever can edit a bin and fed by whoever sends to it, so everything a
template can reach is checked: no globals, a short list of filters and methods, and every value
it builds or writes out counted against ``MAX_RENDERED_CHARS`` (one value) and
``MAX_BUILT_CHARS`` (all values of one rendering, see ``budget``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import types
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import StrictUndefined, Undefined
from jinja2.exceptions import SecurityError
from jinja2.filters import do_default, do_first, do_last, do_urlencode
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.rules.limits import MAX_BUILT_CHARS, MAX_POW_BITS, MAX_RENDERED_CHARS


class TooLarge(SecurityError):
    """A template tried to build a value, or values in all, beyond the limits."""


#: Methods a template may call on strings and objects; none of them can build large values.
SAFE_METHODS = frozenset(
    {"get", "lower", "upper", "strip", "lstrip", "rstrip", "startswith", "endswith"}
)

#: Not a name: the filter that ``templates.compiled`` puts where a template slices (``x[a:b]``).
SLICE = "hookbin slice"


def limit_size(size: int) -> None:
    """Refuse a value of ``size`` characters (or items) before it is built."""
    if size > MAX_RENDERED_CHARS:
        raise TooLarge(f"a value longer than {MAX_RENDERED_CHARS} characters")


#: What the template being rendered has built so far (``_spend``); None outside a rendering.
_BUILT: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "hookbin_answer_built", default=None
)


@contextlib.contextmanager
def budget() -> Iterator[None]:
    """Count what template operations build from here on against ``MAX_BUILT_CHARS``."""
    token = _BUILT.set([0])
    try:
        yield
    finally:
        _BUILT.reset(token)


def _spend(size: int) -> None:
    """Count ``size`` more characters (or items) built by the template being rendered."""
    built = _BUILT.get()
    if built is not None:
        built[0] += size
        if built[0] > MAX_BUILT_CHARS:
            raise TooLarge(f"more than {MAX_BUILT_CHARS} characters built in all")


def _spending(make: Callable[..., str]) -> Callable[..., str]:
    """A filter whose result is counted by ``_spend``."""

    @functools.wraps(make)
    def made(*args: Any, **kwargs: Any) -> str:
        text = make(*args, **kwargs)
        _spend(len(text))
        return text

    return made


def _limit(text: str) -> str:
    limit_size(len(text))
    return text


def _as_text(value: Any) -> str:
    """How a value is written out: text as is, numbers as numbers, everything else as JSON."""
    if isinstance(value, str):
        return _limit(value)
    if isinstance(value, bool) or value is None or isinstance(value, dict | list | tuple):
        return _to_json(value, html_safe=False)
    if isinstance(value, int | float):
        return _limit(str(value))
    if isinstance(value, Undefined):
        str(value)  # raises the undefined value's own message ("... has no attribute ...")
    # Nothing else is reachable from the context; refuse rather than show a Python repr.
    raise SecurityError(f"cannot write out a {type(value).__name__} value")


def _to_json(value: Any, *, html_safe: bool = True) -> str:
    if isinstance(value, Undefined):
        str(value)  # raises the undefined value's own message
    # Streamed with a running total, so a huge structure is refused before it is built.
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
    parts = []
    size = 0
    try:
        for chunk in encoder.iterencode(value):
            size += len(chunk)
            limit_size(size)
            parts.append(chunk)
    except (TypeError, ValueError) as exc:
        raise SecurityError(f"cannot write this value as JSON: {exc}") from None
    text = "".join(parts)
    if html_safe:
        # Valid JSON that stays inert even if someone pastes it into HTML.
        text = (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("'", "\\u0027")
        )
    return text


def _filter_tojson(value: Any) -> str:
    return _to_json(value)


def _filter_lower(value: Any) -> str:
    return _as_text(value).lower()


def _filter_upper(value: Any) -> str:
    return _as_text(value).upper()


def _filter_trim(value: Any, chars: str | None = None) -> str:
    return _as_text(value).strip(chars)


def _filter_replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    text, old, new = _as_text(value), _as_text(old), _as_text(new)
    times = text.count(old) if old else len(text) + 1
    if count is not None:
        times = min(times, max(int(count), 0))
    limit_size(len(text) + times * (len(new) - len(old)))
    return text.replace(old, new, -1 if count is None else max(int(count), 0))


def _filter_join(value: Any, separator: Any = "") -> str:
    separator = _as_text(separator)
    parts: list[str] = []
    size = 0
    for item in value if isinstance(value, list | tuple | dict) else _as_text(value):
        text = _as_text(item)
        size += len(text) + (len(separator) if parts else 0)
        limit_size(size)
        parts.append(text)
    return separator.join(parts)


def _filter_urlencode(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        _to_json(value)  # only to refuse a huge structure before encoding it
        return str(do_urlencode(value))
    return str(do_urlencode(_as_text(value)))


def _filter_length(value: Any) -> int:
    return len(value)


def _filter_int(value: Any, default: int = 0) -> int:
    try:
        if isinstance(value, str):
            return int(float(value)) if "." in value else int(value)
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _filter_float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        # Jinja's own tests would compute value % n: on text, that is printf-style formatting
        # ("%999999999s" builds a gigabyte), and the sender writes that text.
        raise SecurityError(f"expected a number, not a {type(value).__name__} value")
    return value


def _test_odd(value: Any) -> bool:
    return _number(value) % 2 == 1


def _test_even(value: Any) -> bool:
    return _number(value) % 2 == 0


def _test_divisibleby(value: Any, num: Any) -> bool:
    return _number(value) % _number(num) == 0


#: The filters a template may use, by name.
FILTERS: dict[str, Callable[..., Any]] = {
    "default": do_default,
    "d": do_default,
    "first": do_first,
    "last": do_last,
    "float": _filter_float,
    "int": _filter_int,
    "join": _spending(_filter_join),
    "length": _filter_length,
    "count": _filter_length,
    "lower": _spending(_filter_lower),
    "upper": _spending(_filter_upper),
    "trim": _spending(_filter_trim),
    "replace": _spending(_filter_replace),
    "string": _spending(_as_text),
    "tojson": _spending(_filter_tojson),
    "urlencode": _spending(_filter_urlencode),
}


class AnswerEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, narrowed further for templates written by strangers.

    On top of the sandbox: no globals at all, a short list of filters that cannot build huge
    values, only a few harmless methods, dictionary keys before attributes (``json.items`` is the
    field, not the method), every value written out through a size check, and the ``*``, ``**``,
    ``+`` and ``%`` operators checked before they run. Statements other than ``if`` are refused
    before a template is ever compiled (``templates.check_template``).
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            autoescape=False,
            undefined=StrictUndefined,
            finalize=_as_text,
            cache_size=0,
            auto_reload=False,
            # Jinja's constant folding costs time cubic in an expression's depth on every
            # compile, and saves nothing here: nearly every value comes from the request.
            optimized=False,
        )
        self.globals.clear()
        self.filters = {**FILTERS, SLICE: slice}  # SLICE: see templates.compiled
        self.tests = {
            **self.tests,
            "odd": _test_odd,
            "even": _test_even,
            "divisibleby": _test_divisibleby,
        }

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute``: a dictionary key first, else one of a few harmless methods."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        if attribute in SAFE_METHODS and isinstance(obj, str | dict):
            return getattr(obj, attribute)
        if attribute.startswith("_") or hasattr(obj, attribute):
            return self.unsafe_undefined(obj, attribute)
        return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``obj[argument]``: keys of dictionaries, indexes and slices of lists and text only."""
        if isinstance(obj, dict):
            if isinstance(argument, str) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=argument)
        if isinstance(obj, list | tuple | str) and isinstance(argument, int | slice):
            try:
                item = obj[argument]
            except (IndexError, TypeError, ValueError):
                return self.undefined(obj=obj, name=argument)
            if isinstance(argument, slice):
                _spend(len(item))  # a slice is a copy
            return item
        if isinstance(argument, str) and (argument.startswith("_") or hasattr(obj, argument)):
            return self.unsafe_undefined(obj, argument)
        return self.undefined(obj=obj, name=argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Only the methods ``getattr`` hands out may be called."""
        if isinstance(__obj, Undefined):
            return __obj()  # raises with the reason the attribute was refused
        if not (
            isinstance(__obj, types.BuiltinMethodType | types.MethodType)
            and __obj.__name__ in SAFE_METHODS
            and isinstance(__obj.__self__, str | dict)
        ):
            raise SecurityError(f"{type(__obj).__name__} values cannot be called")
        result = __obj(*args, **kwargs)
        if isinstance(result, str) and __obj.__name__ != "get":
            _spend(len(result))  # lower(), strip()...: a copy
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse operations whose result would be huge before computing them."""
        if operator == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting with % is not allowed")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    limit_size(len(seq) * max(times, 0))
                    _spend(len(seq) * max(times, 0))
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                limit_size(len(left) + len(right))
                _spend(len(left) + len(right))
        elif (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > 0
            and right * abs(left).bit_length() > MAX_POW_BITS
        ):
            raise TooLarge("a number too large")
        return super().call_binop(context, operator, left, right)


#: The one environment every answer template is parsed, compiled and rendered with.
ENV = AnswerEnvironment()
