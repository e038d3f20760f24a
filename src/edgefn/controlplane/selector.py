"""`pop_selector` expressions, parsed by a small recursive-descent parser (never
`eval`) and matched against a node's labels.

    expr    := or
    or      := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | '(' expr ')' | test
    test    := NAME ('=='|'!='|'<'|'<='|'>'|'>=') value
             | NAME ['not'] 'in' '[' value (',' value)* ']'
    value   := 'string' | "string" | number | true | false

A missing label makes a test false. `<`, `<=`, `>`, `>=` compare numbers only;
`==` compares numbers numerically when both sides are numbers, text otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgefn.controlplane.errors import InvalidSelector

Labels = Mapping[str, Any]
Value = str | float | bool

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?[0-9]+(?:\.[0-9]+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
      | (?P<name>[A-Za-z_][A-Za-z0-9_.\-/]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}
MAX_LENGTH = 500


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        m = _TOKEN.match(source, pos)
        if not m or m.end() == pos:
            raise InvalidSelector(f"pop_selector: unexpected character at {pos}: {source[pos:]!r}")
        group = m.lastgroup or ""
        text = m.group(group)
        kind = "kw" if group == "name" and text in _KEYWORDS else group
        tokens.append(_Tok(kind, text, m.start(group)))
        pos = m.end()
    tokens.append(_Tok("end", "", len(source)))
    return tokens


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(label: Any, value: Value) -> bool:
    if isinstance(value, bool):
        return label is value or str(label).lower() == str(value).lower()
    a, b = _as_number(label), _as_number(value)
    if a is not None and b is not None:
        return a == b
    return str(label) == str(value)


_ORDER: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

Predicate = Callable[[Labels], bool]


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.i = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self, kind: str, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok.kind != kind or (text is not None and tok.text != text):
            want = text or kind
            got = tok.text or "end of expression"
            raise InvalidSelector(f"pop_selector: expected {want} at {tok.pos}, got {got!r}")
        self.i += 1
        return tok

    def accept(self, kind: str, text: str) -> bool:
        tok = self.peek()
        if tok.kind == kind and tok.text == text:
            self.i += 1
            return True
        return False

    def parse(self) -> Predicate:
        pred = self.or_()
        self.take("end")
        return pred

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.accept("kw", "or"):
            parts.append(self.and_())
        if len(parts) == 1:
            return parts[0]
        return lambda labels: any(p(labels) for p in parts)

    def and_(self) -> Predicate:
        parts = [self.unary()]
        while self.accept("kw", "and"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda labels: all(p(labels) for p in parts)

    def unary(self) -> Predicate:
        if self.accept("kw", "not"):
            inner = self.unary()
            return lambda labels: not inner(labels)
        if self.accept("op", "("):
            inner = self.or_()
            self.take("op", ")")
            return inner
        return self.test()

    def value(self) -> Value:
        tok = self.peek()
        self.i += 1
        if tok.kind == "num":
            return float(tok.text)
        if tok.kind == "str":
            return re.sub(r"\\(.)", r"\1", tok.text[1:-1])
        if tok.kind == "kw" and tok.text in ("true", "false"):
            return tok.text == "true"
        raise InvalidSelector(f"pop_selector: expected a value at {tok.pos}, got {tok.text!r}")

    def test(self) -> Predicate:
        name = self.take("name").text
        negate = self.accept("kw", "not")
        if negate or self.accept("kw", "in"):
            if negate:
                self.take("kw", "in")
            self.take("op", "[")
            values = [self.value()]
            while self.accept("op", ","):
                values.append(self.value())
            self.take("op", "]")

            def member(labels: Labels) -> bool:
                if name not in labels:
                    return False
                found = any(_equal(labels[name], v) for v in values)
                return found != negate

            return member
        op = self.take("op").text
        if op not in ("==", "!=", *_ORDER):
            raise InvalidSelector(f"pop_selector: {op!r} is not a comparison")
        value = self.value()

        def compare(labels: Labels) -> bool:
            if name not in labels:
                return False
            label = labels[name]
            if op == "==":
                return _equal(label, value)
            if op == "!=":
                return not _equal(label, value)
            a, b = _as_number(label), _as_number(value)
            return a is not None and b is not None and _ORDER[op](a, b)

        return compare


@dataclass(frozen=True)
class Selector:
    source: str
    _predicate: Predicate

    def matches(self, labels: Labels) -> bool:
        return self._predicate(labels)


def parse_selector(source: str) -> Selector:
    if len(source) > MAX_LENGTH:
        raise InvalidSelector(f"pop_selector longer than {MAX_LENGTH} characters")
    if not source.strip():
        raise InvalidSelector("pop_selector is empty")
    return Selector(source, _Parser(source).parse())


def matches(source: str | None, labels: Labels) -> bool:
    """True when there is no selector, or the labels satisfy it."""
    return source is None or parse_selector(source).matches(labels)
