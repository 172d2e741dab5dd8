"""Answer templates: checking them when they are saved, and rendering them for a request.

A template may only write values out (``{{ ... }}``) and choose with ``{% if %}``; it reads the
request through ``CONTEXT_NAMES`` and runs in the sandbox of ``app.rules.sandbox``. Checking a
template is cheap whatever it holds: its nesting is bounded from its tokens before it is parsed,
and from its tree before it is compiled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jinja2 import TemplateError, nodes

from app.rules.limits import (
    CONTEXT_NAMES,
    MAX_TEMPLATE_CHARS,
    MAX_TEMPLATE_NESTING,
    SURROGATE,
)
from app.rules.match import Incoming
from app.rules.sandbox import ENV, FILTERS, SAFE_METHODS, SLICE, budget, limit_size


class AnswerError(Exception):
    """A template could not be rendered for this request (answered 500, the capture is kept)."""


_TOO_DEEP = "template error: expressions are nested too deeply"

#: Statement nodes a template may contain; expressions are checked separately.
_STATEMENTS = (nodes.Template, nodes.Output, nodes.If)
_REFUSED_EXPRESSIONS: dict[type[nodes.Node], str] = {
    nodes.Concat: 'the "~" operator is not supported (write {{ a }}{{ b }})',
    nodes.NSRef: "namespaces are not supported",
}
_STATEMENT_NAMES: dict[type[nodes.Node], str] = {
    nodes.For: "loops",
    nodes.Macro: "macros",
    nodes.CallBlock: "call blocks",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.With: "with",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Extends: "extends",
    nodes.Block: "blocks",
    nodes.FilterBlock: "filter blocks",
}

_OPEN = frozenset({"lparen", "lbracket", "lbrace"})
_CLOSE = frozenset({"rparen", "rbracket", "rbrace"})
#: Statements whose body runs up to an ``end...`` tag (and ``set`` without ``=``).
_BODY_STATEMENTS = frozenset(
    {"if", "for", "macro", "call", "filter", "with", "block", "autoescape"}
)


def _is_template(source: str) -> bool:
    return "{{" in source or "{%" in source or "{#" in source


def check_template(source: str, where: str) -> None:
    """Refuse, with ``where`` in the message, a template that is too long, does not parse, or uses
    anything beyond output, ``if``, the context names, and the allowed filters and methods."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"{where}: at most {MAX_TEMPLATE_CHARS} characters")
    if SURROGATE.search(source):
        raise ValueError(f"{where}: may not contain unpaired surrogates (\\ud800-\\udfff)")
    if not _is_template(source):
        return
    try:
        if _parse_too_deep(source):
            raise ValueError(f"{where}: {_TOO_DEEP}")
        tree = ENV.parse(source)
        # Statements first, then names: "range(3)" is better explained by "range" than the call.
        for node in sorted(_walk(tree), key=_report_order):
            problem = _node_problem(node)
            if problem:
                raise ValueError(f"{where}: {problem}")
        # A long chain of filters or operators parses without recursion but nests as deeply as
        # it is long, and compiling a deep tree is what is slow.
        if _tree_depth(tree) > MAX_TEMPLATE_NESTING:
            raise ValueError(f"{where}: {_TOO_DEEP}")
        compiled(source)
    except TemplateError as exc:
        raise ValueError(f"{where}: template error: {exc}") from None
    except (RecursionError, SyntaxError):
        # A backstop: Python's own compiler refuses deeply nested code.
        raise ValueError(f"{where}: {_TOO_DEEP}") from None


def _parse_too_deep(source: str) -> bool:
    """Whether Jinja's parser could nest deeper than MAX_TEMPLATE_NESTING levels on ``source``,
    read from its tokens alone (lexing is linear; parsing recurses).

    The parser recurses once per bracket, block statement, prefix operator (``not``, ``-``,
    ``+``) and chained ``else``. This counts all of them, and every ``not``, ``-``, ``+`` and
    ``else`` as if it were one, forgetting them only at a comma, colon or closing bracket: it may
    count more levels than the parser uses, never fewer.
    A template the lexer refuses is read up to the error, which the parser then reports.
    """
    blocks = 0
    levels: list[int] = []  # per open bracket of the current tag (0: the tag): prefixes seen
    previous: Any = None
    keyword: str | None = None  # the statement a ``{% ... %}`` tag starts with
    body_set = False
    tokens = ENV.lexer.wrap(ENV.lexer.tokeniter(source, None))
    try:
        for token in tokens:
            kind = token.type
            if kind in ("variable_begin", "block_begin"):
                levels, keyword, body_set = [0], None, False
            elif kind == "block_end":
                if body_set:
                    blocks += 1
                levels = []
            elif kind == "variable_end":
                levels = []
            elif not levels:
                pass  # text between tags
            elif previous.type == "block_begin" and kind == "name":
                keyword = token.value
                if keyword.startswith("end"):
                    blocks = max(blocks - 1, 0)
                elif keyword == "set":
                    body_set = True  # until an "=" says otherwise
                elif keyword in _BODY_STATEMENTS:
                    blocks += 1
            elif kind == "assign" and keyword == "set":
                body_set = False
            elif kind in _OPEN:
                levels.append(0)
            elif kind in _CLOSE:
                if len(levels) > 1:
                    levels.pop()
            elif kind in ("comma", "colon"):
                levels[-1] = 0
            elif kind in ("sub", "add") or (kind == "name" and token.value in ("not", "else")):
                levels[-1] += 1
            if blocks + len(levels) - 1 + sum(levels) > MAX_TEMPLATE_NESTING:
                return True
            previous = token
    except TemplateError:
        pass
    return False


def _tree_depth(tree: nodes.Node) -> int:
    """The deepest level of ``tree`` below the template node (walked without recursion)."""
    deepest = 0
    stack = [(child, 1) for child in tree.iter_child_nodes()]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest


def _report_order(node: nodes.Node) -> int:
    return 0 if isinstance(node, nodes.Stmt) else 1 if isinstance(node, nodes.Name) else 2


def _walk(tree: nodes.Node) -> Iterator[nodes.Node]:
    """Every node of ``tree``, parents before children (without recursion)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(list(node.iter_child_nodes())))


def _node_problem(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Stmt) and not isinstance(node, _STATEMENTS):
        what = _STATEMENT_NAMES.get(type(node), f"{type(node).__name__} statements")
        return f"{what} are not allowed in answer templates (only {{{{ ... }}}} and {{% if %}})"
    for kind, message in _REFUSED_EXPRESSIONS.items():
        if isinstance(node, kind):
            return message
    if isinstance(node, nodes.Name) and node.name not in CONTEXT_NAMES:
        return f'unknown name "{node.name}" (templates can read {", ".join(CONTEXT_NAMES)})'
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        return f'"{node.attr}" cannot be read'
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
        and node.arg.value.startswith("_")
    ):
        # No value a template can read has keys like this: it can only be a probe.
        return f'"{node.arg.value}" cannot be read'
    if isinstance(node, nodes.Filter) and node.name not in FILTERS:
        return f'unknown filter "{node.name}" (allowed: {", ".join(sorted(FILTERS))})'
    if isinstance(node, nodes.Call) and not (
        isinstance(node.node, nodes.Getattr) and node.node.attr in SAFE_METHODS
    ):
        return f"only these methods can be called: {', '.join(sorted(SAFE_METHODS))}"
    return None


@functools.lru_cache(maxsize=512)
def compiled(source: str) -> tuple[Any, frozenset[str]]:
    """The compiled template and the context names it reads (cached: rules are few)."""
    tree = ENV.parse(source)
    names = frozenset(
        n.name for n in _walk(tree) if isinstance(n, nodes.Name) and n.name in CONTEXT_NAMES
    )
    for node in tree.find_all(nodes.Getitem):
        if isinstance(node.arg, nodes.Slice):
            # Jinja compiles ``x[a:b]`` to a plain Python subscript; as ``x[SLICE(a, b)]`` it goes
            # through ``AnswerEnvironment.getitem``, which counts the copy a slice makes.
            bounds = [node.arg.start, node.arg.stop, node.arg.step]
            start, stop, step = (nodes.Const(None) if b is None else b for b in bounds)
            node.arg = nodes.Filter(start, SLICE, [stop, step], [], None, None)
    return ENV.from_string(tree), names


def _context(incoming: Incoming, names: frozenset[str]) -> dict[str, Any]:
    # Built lazily per name: a template that reads ``json.challenge`` never decodes a form.
    makers: Mapping[str, Callable[[], Any]] = {
        "method": lambda: incoming.method,
        "path": lambda: incoming.path,
        "query": lambda: incoming.query,
        "headers": lambda: incoming.header_map,
        "json": lambda: incoming.json,
        "form": lambda: incoming.form,
        "body": lambda: incoming.text,
    }
    return {name: makers[name]() for name in names}


def render_template(source: str, incoming: Incoming, *, where: str = "template") -> str:
    """Render one answer template against a request; raises AnswerError naming the problem.

    Output is streamed and counted, so a template cannot write more than MAX_RENDERED_CHARS,
    and what its operations build on the way is counted too (``sandbox.budget``).
    """
    if not _is_template(source):
        return source
    try:
        with budget():
            template, names = compiled(source)
            size = 0
            parts = []
            for chunk in template.generate(_context(incoming, names)):
                size += len(chunk)
                limit_size(size)
                parts.append(chunk)
            return "".join(parts)
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        # TemplateError includes the sandbox's refusals (SecurityError, TooLarge).
        raise AnswerError(f"response template failed ({where}): {exc}") from None
    except RecursionError:
        raise AnswerError(f"response template failed ({where}): too deeply nested") from None
