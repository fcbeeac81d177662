"""The course's text and code, read from the engine modules themselves.

Each engine module opens with a docstring that teaches: a title line, then
sections headed by an unindented line with an indented body ("The model",
"What it costs per connection", "What breaks it", "When to use it"...).
`lesson` parses it; `source` and `diff` cut functions and methods out of a
module by their qualified name with `ast` (no import, so reading the gevent
engine does not import gevent), without their docstrings: the page shows
what the code does, the docstring already said why. Nothing here is copied
text: rename a method and the tour (and its test) says so.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import textwrap
from dataclasses import dataclass
from functools import cache

#: The sections of a docstring the page shows, by the start of their heading.
LESSON_HEADINGS = ("The model", "What changed", "Why it is better", "What it costs", "What forking buys",
                   "What it buys", "The GIL", "What breaks it", "What it still gets wrong", "When to use it")


@dataclass(frozen=True)
class Lesson:
    module: str
    title: str
    #: (heading, body) in the docstring's order, only LESSON_HEADINGS.
    sections: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CodeRef:
    """A function or method to show: `name` in `module`, or its change from `before`."""

    module: str
    name: str
    before: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        return f"{self.module}.{self.name}"


class SourceNotFound(LookupError):
    """A CodeRef names a function the module does not have (any more)."""


def module_path(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SourceNotFound(f"no module {module!r}")
    return spec.origin


@cache
def parsed_module(module: str) -> tuple[ast.Module, tuple[str, ...]]:
    with open(module_path(module), encoding="utf-8") as handle:
        text = handle.read()
    return ast.parse(text), tuple(text.splitlines())


def lesson(module: str) -> Lesson:
    """The title and teaching sections of `module`'s docstring."""
    tree, _ = parsed_module(module)
    doc = ast.get_docstring(tree) or ""
    lines = doc.splitlines()
    title = lines[0].strip() if lines else module
    sections: list[tuple[str, str]] = []
    heading, body = None, []
    for line in lines[1:] + [""]:
        indented = line.startswith(" ")
        if line.strip() and not indented:
            if heading is not None:
                sections.append((heading, _paragraphs(body)))
            heading, body = line.strip(), []
        elif heading is not None and (indented or not line.strip()):
            body.append(line)
    if heading is not None:
        sections.append((heading, _paragraphs(body)))
    kept = tuple((h, b) for h, b in sections if b and h.startswith(LESSON_HEADINGS))
    return Lesson(module, title, kept)


def _paragraphs(lines: list[str]) -> str:
    return textwrap.dedent("\n".join(lines)).strip()


def _find(module: str, name: str) -> ast.AST:
    tree, _ = parsed_module(module)
    node: ast.AST = tree
    for part in name.split("."):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child.name == part:
                node = child
                break
        else:
            raise SourceNotFound(f"{module} has no {name!r}")
    return node


def source(module: str, name: str) -> list[str]:
    """The lines of `name` (a function, method or class) in `module`, docstring left out."""
    node = _find(module, name)
    _, lines = parsed_module(module)
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    chunk = list(lines[first - 1:node.end_lineno])
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        doc = body[0]
        del chunk[doc.lineno - first:doc.end_lineno - first + 1]
    return textwrap.dedent("\n".join(chunk)).splitlines()


def diff(before: tuple[str, str], after: tuple[str, str]) -> list[str]:
    """A unified diff from one function to another (the change between two chapters)."""
    old, new = source(*before), source(*after)
    return list(difflib.unified_diff(old, new, f"{before[0]}.{before[1]}", f"{after[0]}.{after[1]}",
                                     n=max(len(old), len(new)), lineterm=""))


def code_of(ref: CodeRef) -> list[str]:
    """What the page shows for `ref`: its source, or its diff from `ref.before`."""
    if ref.before is None:
        return source(ref.module, ref.name)
    return diff(ref.before, (ref.module, ref.name))
