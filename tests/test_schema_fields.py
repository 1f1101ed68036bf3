"""Every recipe key does something: each field of the recipe schema is read by library code.

The check is static, over the AST of ``decola_core`` and ``decola_cli`` (the schema's validators
and the importer of original configs excluded; the schema's public methods count). A field
``f`` of section ``S`` counts as read where code accesses ``<expr>.f`` and ``<expr>`` holds an
``S``: an attribute named as ``S`` is held in its parent (``recipe.model.loss`` holds a
LossConfig), an element of such a list or dict, or a name bound to one (``loss = cfg.loss``,
``for d in recipe.data.train``, ``solver: SolverConfig``, ``isinstance(b, SwinBackbone)``).
A field that nothing reads fails the test with its dotted path.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from pydantic import BaseModel

from decola_core.config import schema

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "decola_core"
SCHEMA = CORE / "config" / "schema.py"
NOT_READERS = {SCHEMA, CORE / "config" / "importer.py"}


def _sections(annotation) -> list[type[BaseModel]]:
    """Section classes inside an annotation (unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, schema.Section):
        return [annotation]
    return [s for arg in typing.get_args(annotation) for s in _sections(arg)]


def schema_tree() -> tuple[dict[str, set[type]], list[tuple[str, type, str]]]:
    """(attribute name -> sections held under it, every (dotted path, section, field))."""
    holders: dict[str, set[type]] = {}
    fields: list[tuple[str, type, str]] = []

    def walk(cls: type[BaseModel], path: str) -> None:
        for name, info in cls.model_fields.items():
            fields.append((f"{path}{name}", cls, name))
            for child in _sections(info.annotation):
                holders.setdefault(name, set()).add(child)
                walk(child, f"{path}{name}.")

    walk(schema.Recipe, "")
    return holders, fields


class _Reads(ast.NodeVisitor):
    """Collects (section, field) pairs read in one module."""

    def __init__(
        self, holders: dict[str, set[type]], classes: dict[str, type], schema_methods=False
    ) -> None:
        self.holders, self.classes = holders, classes
        self.schema_methods = schema_methods  # visit only the public methods of sections
        self.scopes: list[dict[str, set[type]]] = [{}]
        self.reads: set[tuple[type, str]] = set()

    def held(self, node: ast.AST) -> set[type]:
        """The sections an expression may hold."""
        if isinstance(node, ast.Attribute):
            return self.holders.get(node.attr, set())
        if isinstance(node, ast.Subscript):
            return self.held(node.value)
        if isinstance(node, ast.Name):
            if node.id in ("recipe", "self_recipe"):
                return {schema.Recipe}
            for scope in reversed(self.scopes):
                if node.id in scope:
                    return scope[node.id]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("values", "items", "get", "model_copy")
        ):
            return self.held(node.func.value)
        if isinstance(node, ast.IfExp):
            return self.held(node.body) | self.held(node.orelse)
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.held(v) for v in node.values))
        return set()

    def bind(self, target: ast.AST, value: ast.AST | None, sections: set[type] | None = None):
        sections = self.held(value) if sections is None else sections
        if isinstance(target, ast.Name) and sections:
            self.scopes[-1].setdefault(target.id, set()).update(sections)
        elif isinstance(target, ast.Tuple) and _is_call(value, "zip", "enumerate"):
            values = value.args if value.func.id == "zip" else [None, *value.args]
            for t, v in zip(target.elts, values, strict=False):
                if v is not None:
                    self.bind(t, v)
        elif isinstance(target, ast.Tuple):
            values = value.elts if isinstance(value, ast.Tuple) else [None] * len(target.elts)
            for t, v in zip(target.elts, values, strict=False):
                if v is not None:
                    self.bind(t, v)
                elif (
                    isinstance(value, ast.Call)
                    and isinstance(value.func, ast.Attribute)
                    and value.func.attr == "items"  # for name, d in data.datasets.items()
                ):
                    self.bind(t, None, self.held(value))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        """Inside the schema: ``self`` in a public method of a section holds that section."""
        section = self.classes.get(node.name) if self.schema_methods else None
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and section and not item.name.startswith("_"):
                self.scopes.append({"self": {section}})
                self.generic_visit(item)
                self.scopes.pop()
            elif not self.schema_methods:
                self.visit(item)

    def visit_FunctionDef(self, node) -> None:
        scope: dict[str, set[type]] = {}
        for arg in [*node.args.args, *node.args.kwonlyargs]:
            parts = list(ast.walk(arg.annotation)) if arg.annotation else []
            names = {n.id for n in parts if isinstance(n, ast.Name)}
            names |= {n.attr for n in parts if isinstance(n, ast.Attribute)}
            names |= {n.value for n in parts if isinstance(n, ast.Constant)}
            found = {self.classes[n] for n in names if n in self.classes}
            if found:
                scope[arg.arg] = found
        self.scopes.append(scope)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self.bind(target, node.value)
            if isinstance(target, ast.Attribute) and self.held(node.value):
                self.holders.setdefault(target.attr, set()).update(self.held(node.value))
        self.generic_visit(node)

    def visit_For(self, node) -> None:
        self.bind(node.target, node.iter)
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        self.bind(node.target, node.iter)
        self.generic_visit(node)

    def visit_ListComp(self, node) -> None:  # bind generators before the element is visited
        for generator in node.generators:
            self.visit(generator)
        self.visit(node.elt)

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_Call(self, node: ast.Call) -> None:
        """``isinstance(x, SomeSection)``: x holds that section from here on."""
        if _is_call(node, "isinstance") and len(node.args) == 2:
            target, kinds = node.args
            names = [n.id for n in ast.walk(kinds) if isinstance(n, ast.Name)]
            found = {self.classes[n] for n in names if n in self.classes}
            if isinstance(target, ast.Name) and found:
                self.scopes[-1].setdefault(target.id, set()).update(found)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        for section in self.held(node.value):
            if node.attr in section.model_fields:
                self.reads.add((section, node.attr))
        self.generic_visit(node)


def _is_call(node: ast.AST | None, *names: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names


def read_fields() -> set[tuple[type, str]]:
    holders, _ = schema_tree()
    classes = {
        name: obj
        for name, obj in vars(schema).items()
        if isinstance(obj, type) and issubclass(obj, schema.Section)
    }
    reads: set[tuple[type, str]] = set()
    modules = [
        p
        for p in sorted([*CORE.rglob("*.py"), *(ROOT / "decola_cli").rglob("*.py")])
        if p not in NOT_READERS
    ]
    for _ in range(2):  # attribute aliases found in one module (self.x = recipe.y) help others
        for path in [*modules, SCHEMA]:
            visitor = _Reads(holders, classes, schema_methods=path == SCHEMA)
            visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
            reads |= visitor.reads
    return reads


def _discriminator(section: type[BaseModel], name: str) -> bool:
    """A single-value Literal field: pydantic reads it to pick the section's class."""
    annotation = section.model_fields[name].annotation
    return typing.get_origin(annotation) is typing.Literal and len(typing.get_args(annotation)) == 1


def test_every_recipe_field_is_read_by_the_library() -> None:
    _, fields = schema_tree()
    reads = read_fields()
    unread = sorted(
        {
            path
            for path, section, name in fields
            if (section, name) not in reads and not _discriminator(section, name)
        }
    )
    assert not unread, f"recipe fields no code reads (wire them or remove them): {unread}"


def test_the_walk_notices_an_unread_field() -> None:
    """The check itself: a field that only the schema mentions is reported."""
    holders, _ = schema_tree()
    classes = {"LossConfig": schema.LossConfig}
    code = "def f(recipe):\n    loss = recipe.model.loss\n    return loss.giou_weight\n"
    visitor = _Reads(holders, classes)
    visitor.visit(ast.parse(code))
    assert (schema.LossConfig, "giou_weight") in visitor.reads
    assert (schema.LossConfig, "class_weight") not in visitor.reads
