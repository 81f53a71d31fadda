"""The building blocks of the `.github/nofx.yml` schema: leaves, lists, sections, and errors that name key and value.

`bot.repo_config` builds its one table, `_SCHEMA`, from these; each refusal says which key, what it is and what is
allowed, because it ends up in a GitHub comment.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.plan_templates import PlanTemplate, TemplateError, parse_templates

MAX_LIST_ITEMS = 100


class SchemaError(ValueError):
    """A value the schema refuses: its dotted key, what it is, and what is allowed there."""

    def __init__(self, key: str, problem: str, allowed: str) -> None:
        self.key = key
        self.problem = problem
        self.allowed = allowed
        super().__init__(f"`{key}` {problem}; allowed: {allowed}")


@dataclass(frozen=True)
class Value:
    """A leaf: what it allows (in words, for the error), a test, and an optional conversion."""

    allowed: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda value: value

    def parse(self, value: object, key: str) -> Any:
        if not self.accepts(value):
            raise SchemaError(key, f"is {show_value(value)}", self.allowed)
        return self.convert(value)


@dataclass(frozen=True)
class ListOf:
    """A list of leaves, kept as a tuple in first-seen order without repeats."""

    item: Value
    allowed: str

    def parse(self, value: object, key: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise SchemaError(key, f"is {show_value(value)}", self.allowed)
        if len(value) > MAX_LIST_ITEMS:
            raise SchemaError(key, f"has {len(value)} items", f"{self.allowed}, at most {MAX_LIST_ITEMS} items")
        for position, item in enumerate(value, start=1):
            if not self.item.accepts(item):
                raise SchemaError(key, f"has {show_value(item)} (item {position})", self.allowed)
        return tuple(dict.fromkeys(self.item.convert(item) for item in value))


@dataclass(frozen=True)
class Section:
    """A mapping whose keys are exactly the dataclass's fields; absent keys keep the dataclass default."""

    cls: type
    fields: Mapping[str, Value | ListOf | Section | Templates]

    @property
    def allowed(self) -> str:
        return "a mapping with the keys " + ", ".join(self.fields)

    def parse(self, value: object, key: str) -> Any:
        if value is None:  # a section whose lines are all commented out means the same as `{}`
            value = {}
        if not isinstance(value, dict):
            raise SchemaError(key, f"is {show_value(value)}", self.allowed)
        parsed = {}
        for name, item in value.items():
            if name not in self.fields:
                raise unknown_key(name, key, list(self.fields))
            parsed[name] = self.fields[name].parse(item, join_key(key, name))
        return self.cls(**parsed)


@dataclass(frozen=True)
class Templates:
    """`templates:`: named plans, checked by `bot.plan_templates` (which knows what a step may say)."""

    allowed: str = "a mapping of template names to {description, steps}"

    def parse(self, value: object, key: str) -> dict[str, PlanTemplate]:
        try:
            return parse_templates(value)
        except TemplateError as exc:
            raise SchemaError(join_key(key, exc.key) if exc.key else key, exc.problem, exc.allowed) from None


def one_of(*choices: str) -> Value:
    return Value("one of " + ", ".join(choices), lambda v: isinstance(v, str) and v in choices)


def boolean() -> Value:
    return Value("true or false", lambda v: isinstance(v, bool))


def whole(low: int, high: int) -> Value:
    return Value(
        f"a whole number from {low} to {high}",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
    )


def amount(high: float) -> Value:
    # Written so NaN fails: every comparison with NaN is False.
    return Value(
        f"a number above 0 and at most {high:g}",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= high,
        float,
    )


def text_matching(allowed: str, pattern: str) -> Value:
    regex = re.compile(pattern)
    return Value(allowed, lambda v: isinstance(v, str) and regex.fullmatch(v) is not None)


def or_null(value: Value, meaning: str) -> Value:
    return Value(f"{value.allowed}, or null ({meaning})", lambda v: v is None or value.accepts(v), value.convert)


def unknown_key(name: object, section: str, known: list[str]) -> SchemaError:
    hint = ""
    if isinstance(name, str) and (close := difflib.get_close_matches(name, known, n=1)):
        hint = f" (did you mean `{join_key(section, close[0])}`?)"
    key = join_key(section, name if isinstance(name, str) else show_value(name))
    return SchemaError(key, "is not a known key" + hint, "the keys " + ", ".join(known))


def join_key(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def show_value(value: object) -> str:
    """A value as the author wrote it, short: the error ends up in a GitHub comment."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "…'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return f"{value.isoformat()} (a date)"
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"
