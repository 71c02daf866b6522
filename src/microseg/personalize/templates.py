"""Sandboxed Jinja2 templates: compile once, refuse unsafe constructs, never render broken.

Templates are rendered in :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with
three layers of defence:

1. **Static check at save/validate time** (:func:`check_template`): the template's AST is
   walked and anything that reaches for internals is refused with its line number —
   attributes or names starting with ``_``, ``mro``/``format``/``format_map`` style
   attributes, the ``attr`` filter, globals such as ``config``/``request``/``self``/
   ``lipsum``/``cycler``, and loops nested deeper than :data:`MAX_LOOP_DEPTH`.
2. **The sandbox at render time**: unsafe attribute access yields an undefined value,
   calls of unsafe callables raise ``SecurityError``; ``str.format`` goes through the
   sandboxed formatter; the environment is immutable (no ``list.append`` etc.).
3. **Resource bounds**: ``range`` is capped (:data:`MAX_RANGE`) and shares a per-render
   iteration budget, ``**`` and sequence ``*`` are bounded, padding filters are capped,
   and the output length is limited (:data:`MAX_OUTPUT_CHARS`).

Missing data never breaks a render: declared placeholder defaults fill the context,
:class:`FallbackUndefined` renders undeclared or missing values as the empty string (and
is chainable, iterable and falsy), and ``None`` prints as ``""``. A runtime error falls
back to the block's static fallback text (see :func:`render_template`).
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

MAX_RANGE = 1_000
"""Largest ``range()`` a template may build."""
ITERATION_BUDGET = 10_000
"""Items all ``range()`` calls of one render may yield together."""
MAX_POWER = 1_000_000
"""Largest result magnitude of ``a ** b`` in a template."""
MAX_SEQUENCE = 10_000
"""Largest string/list a template may build with ``*``."""
MAX_PAD = 200
"""Largest width for ``center``/``indent``/``wordwrap``/``truncate`` style filters."""
MAX_OUTPUT_CHARS = 200_000
"""Longest rendered output accepted."""
MAX_LOOP_DEPTH = 2
"""Deepest nesting of ``{% for %}`` loops accepted at save time."""

FORBIDDEN_NAMES = frozenset(
    {
        "self",
        "config",
        "request",
        "session",
        "g",
        "url_for",
        "get_flashed_messages",
        "lipsum",
        "cycler",
        "joiner",
        "namespace",
        "varargs",
        "kwargs",
        "caller",
        "loop_globals",
    }
)
FORBIDDEN_ATTRS = frozenset(
    {
        "mro",
        "format",
        "format_map",
        "func_globals",
        "func_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "tb_frame",
        "f_globals",
        "f_locals",
        "f_builtins",
        "im_class",
        "im_func",
        "im_self",
        "environment",
        "module",
    }
)
FORBIDDEN_FILTERS = frozenset({"attr", "xmlattr", "pprint", "filesizeformat"})

PLAIN_SCALARS: tuple[type, ...] = (str, int, float, bool, Decimal, date, time, timedelta)
SAFE_ATTRIBUTE_TYPES: tuple[type, ...] = (
    *PLAIN_SCALARS,
    dict,
    list,
    tuple,
    Markup,
    LoopContext,
    Undefined,
)
MAX_CONTEXT_DEPTH = 6

_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("microseg_template_budget")


class TemplateProblem(ValueError):
    """A template refused at save time; ``lineno`` is 1-based within the template text."""

    def __init__(self, message: str, lineno: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.lineno = lineno


class FallbackUndefined(ChainableUndefined):
    """Undefined that renders as ``""``: chainable (``a.b.c``), iterable (empty), falsy.

    Comparisons and arithmetic on it still raise ``UndefinedError`` (a ``TemplateError``),
    which the renderer turns into the block's fallback rather than a broken message.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return ""

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __html__(self) -> str:
        return ""


class BoundedRange:
    """``range`` for templates: capped at :data:`MAX_RANGE` items, iteration draws on the
    per-render budget, and it prints as ``range(a, b)`` (never an object address)."""

    __slots__ = ("_r",)

    def __init__(self, *args: int) -> None:
        r = range(*args)
        if len(r) > MAX_RANGE:
            raise SecurityError(f"range of {len(r)} items exceeds the limit of {MAX_RANGE}")
        self._r = r

    def __iter__(self) -> Iterator[int]:
        budget = _budget.get(None)
        for value in self._r:
            if budget is not None:
                budget[0] -= 1
                if budget[0] < 0:
                    raise SecurityError(
                        f"template exceeded the iteration budget of {ITERATION_BUDGET}"
                    )
            yield value

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, index: int) -> int:
        return self._r[index]

    def __repr__(self) -> str:
        return repr(self._r)


class TemplateFunction:
    """A callable exposed to templates that prints as ``name()``, never as a function repr."""

    __slots__ = ("_fn", "_name")

    def __init__(self, name: str, fn: Any) -> None:
        self._name = name
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self._name}()"


def _clamp(width: Any) -> int:
    try:
        value = int(width)
    except (TypeError, ValueError):
        return 0
    return max(0, min(value, MAX_PAD))


class MicrosegSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with bounded operators, filters and globals."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=FallbackUndefined,
            finalize=_finalize,
            auto_reload=False,
            cache_size=0,
        )
        self.globals.clear()
        self.globals.update(
            {
                "range": TemplateFunction("range", BoundedRange),
                "dict": TemplateFunction("dict", _plain_dict),
            }
        )
        for name in ("attr", "xmlattr", "pprint"):
            self.filters.pop(name, None)
        base_center = self.filters["center"]
        base_indent = self.filters["indent"]
        base_truncate = self.filters["truncate"]
        base_wordwrap = self.filters["wordwrap"]
        self.filters["center"] = lambda s, width=80: base_center(s, _clamp(width))
        self.filters["indent"] = lambda s, width=4, *a, **k: base_indent(s, _clamp(width), *a, **k)
        self.filters["truncate"] = lambda env, s, length=255, *a, **k: base_truncate(
            env, s, _clamp(length) or 1, *a, **k
        )
        self.filters["truncate"].jinja_pass_arg = base_truncate.jinja_pass_arg
        self.filters["wordwrap"] = lambda env, s, width=79, *a, **k: base_wordwrap(
            env, s, max(_clamp(width), 1), *a, **k
        )
        self.filters["date"] = _format_date
        self.filters["wordwrap"].jinja_pass_arg = base_wordwrap.jinja_pass_arg

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Attributes only on plain data types (str/dict/list/date methods, loop variables)."""
        if not isinstance(obj, SAFE_ATTRIBUTE_TYPES):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Bound the operators that can allocate or compute without limit."""
        if operator == "**":
            numbers = isinstance(left, (int, float)) and isinstance(right, (int, float))
            if numbers and (
                abs(right) > 64 or (abs(left) > 1 and abs(right) * _log2(abs(left)) > 64)
            ):
                raise SecurityError("exponent too large in template")
            return left**right
        if operator == "*":
            seq, count = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            sized = isinstance(seq, (str, list, tuple)) and isinstance(count, int)
            if sized and len(seq) * max(count, 0) > MAX_SEQUENCE:
                raise SecurityError("repeated sequence too long in template")
            return left * right
        if operator == "%":
            if isinstance(left, str):
                raise SecurityError("%-formatting is not allowed in templates")
            return left % right
        return super().call_binop(context, operator, left, right)


def _log2(x: float) -> float:
    import math

    return math.log2(x) if x > 0 else 0.0


def _format_date(value: Any, fmt: str = "%d %B %Y") -> str:
    """Format a date/datetime/ISO string; anything else (or a bad format) prints as is."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, (date, datetime)):
        if len(fmt) > 64:
            return value.isoformat()
        return value.strftime(fmt)
    return "" if value is None or isinstance(value, Undefined) else str(value)


def _plain_dict(**kwargs: Any) -> dict[str, Any]:
    return dict(kwargs)


def _finalize(value: Any) -> Any:
    """Print ``None`` as an empty string, never as ``"None"``; never print foreign objects."""
    if value is None:
        return ""
    if isinstance(value, (*SAFE_ATTRIBUTE_TYPES, set, frozenset)):
        return value
    return ""


_DROP = object()


def plain_data(value: Any, depth: int = 0) -> Any:
    """Copy of ``value`` with only plain data: scalars, dates, dicts with str keys, lists.

    Anything else (arbitrary objects, functions, classes) is dropped so a template can
    neither print its repr nor reach its attributes. Depth is capped.
    """
    if value is None or isinstance(value, PLAIN_SCALARS):
        # a Markup (or other str subclass) from the caller is escaped like any other text
        return str(value) if isinstance(value, str) and type(value) is not str else value
    if depth >= MAX_CONTEXT_DEPTH:
        return _DROP
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if isinstance(k, str) and not k.startswith("_"):
                pv = plain_data(v, depth + 1)
                if pv is not _DROP:
                    out[k] = pv
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [pv for v in value if (pv := plain_data(v, depth + 1)) is not _DROP]
    return _DROP


def plain_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The template context reduced to plain data (see :func:`plain_data`)."""
    result = plain_data(context)
    return result if isinstance(result, dict) else {}


# -- static checks -----------------------------------------------------------------------------
def check_template(env: MicrosegSandbox, source: str) -> None:
    """Parse ``source`` and refuse syntax errors and unsafe constructs (with line numbers)."""
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno) from None
    _check_node(tree, 0)
    try:
        env.compile(tree)
    except TemplateSyntaxError as exc:  # e.g. unknown filter or test
        raise TemplateProblem(f"template error: {exc.message}", exc.lineno) from None


def _check_node(node: nodes.Node, loop_depth: int) -> None:
    line = getattr(node, "lineno", None)
    if isinstance(node, nodes.Getattr):
        _check_attr(str(node.attr), line)
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        if isinstance(node.arg.value, str):
            _check_attr(node.arg.value, line)
    elif isinstance(node, nodes.Name):
        if node.name.startswith("_") or node.name in FORBIDDEN_NAMES:
            raise TemplateProblem(f"name '{node.name}' is not allowed in templates", line)
    elif isinstance(node, (nodes.Filter, nodes.Test)) and node.name in FORBIDDEN_FILTERS:
        raise TemplateProblem(f"filter '{node.name}' is not allowed in templates", line)
    elif isinstance(node, (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
        raise TemplateProblem("templates cannot import, include or extend other templates", line)
    elif isinstance(node, nodes.Const) and isinstance(node.value, str) and "{0." in node.value:
        raise TemplateProblem("format strings with attribute lookups are not allowed", line)
    if isinstance(node, nodes.For):
        loop_depth += 1
        if loop_depth > MAX_LOOP_DEPTH:
            raise TemplateProblem(f"loops nested deeper than {MAX_LOOP_DEPTH} levels", line)
    for child in node.iter_child_nodes():
        _check_node(child, loop_depth)


def _check_attr(name: str, line: int | None) -> None:
    if name.startswith("_") or name in FORBIDDEN_ATTRS:
        raise TemplateProblem(f"attribute '{name}' is not allowed in templates", line)


# -- compile cache + rendering -----------------------------------------------------------------
@dataclass
class TemplateCache:
    """Compiled templates keyed by (escape mode, source): compile once per version."""

    html: MicrosegSandbox = field(default_factory=lambda: MicrosegSandbox(autoescape=True))
    text: MicrosegSandbox = field(default_factory=lambda: MicrosegSandbox(autoescape=False))
    _compiled: dict[tuple[bool, str], Template] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def env(self, html: bool) -> MicrosegSandbox:
        return self.html if html else self.text

    def get(self, source: str, *, html: bool) -> Template:
        """The compiled template for ``source`` (checked and compiled on first use)."""
        key = (html, source)  # str hashes are cached by Python: cheap on the hot path
        found = self._compiled.get(key)
        if found is not None:
            return found
        env = self.env(html)
        check_template(env, source)
        compiled = env.from_string(source)
        with self._lock:
            self._compiled.setdefault(key, compiled)
        return compiled

    def __len__(self) -> int:
        return len(self._compiled)


@functools.cache
def default_cache() -> TemplateCache:
    """The process-wide cache, created on first use (content versions are immutable, so
    entries never go stale)."""
    return TemplateCache()


RENDER_ERRORS: tuple[type[BaseException], ...] = (
    TemplateError,
    ArithmeticError,
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    RecursionError,
)


@dataclass(frozen=True)
class PartResult:
    """One rendered template part: the text, or the fallback and why it was used."""

    text: str
    ok: bool
    error: str | None = None


def render_template(
    template: Template,
    context: Mapping[str, Any],
    *,
    fallback: str = "",
    max_chars: int = MAX_OUTPUT_CHARS,
    plain: bool = False,
) -> PartResult:
    """Render a compiled template; any runtime error yields ``fallback`` with the reason.

    ``plain=True`` says the context already went through :func:`plain_context`.
    """
    token = _budget.set([ITERATION_BUDGET])
    try:
        out: list[str] = []
        size = 0
        for chunk in template.generate(context if plain else plain_context(context)):
            size += len(chunk)
            if size > max_chars:
                raise SecurityError(f"rendered output exceeds {max_chars} characters")
            out.append(chunk)
        return PartResult("".join(out), True)
    except RENDER_ERRORS as exc:
        return PartResult(fallback, False, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        _budget.reset(token)


def escape_html(value: str) -> str:
    """HTML-escape static text (used for fallbacks shown in HTML parts)."""
    return str(Markup.escape(value))
