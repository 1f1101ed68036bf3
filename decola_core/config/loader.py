"""Find, load and validate recipes: YAML files with ``_base_`` inheritance and dotted overrides.

A recipe is named by its path below ``configs/`` without ``.yaml`` (e.g.
``DECOLA_PHASE1_Lbase_CLIP_R5021k_4x`` or ``eval/DECOLA_PHASE2_O365IN21k_CLIP_SwinT``), or given
as a path to any YAML file. ``_base_`` names one file or a list of files (paths relative to the
file that names them, or recipe names); they are merged in order, then the file's own keys on
top. Mappings merge key by key; lists and scalars replace.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from decola_core.config.schema import Recipe
from decola_core.errors import ConfigError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
CONFIG_DIR_ENV = "DECOLA_CONFIG_DIR"

_DETA = (
    "the DECOLA_DETA architecture, which decola does not implement; the original could not "
    "load this config either (its DETA keys were never registered)"
)
#: Configs of the original release that are deliberately not shipped, and why.
UNSUPPORTED_RECIPES = {
    "DECOLA_PHASE1_O365_Lbase_CLIP_SwinL_4x": _DETA,
    "DECOLA_PHASE1_O365_L_CLIP_SwinL_4x": _DETA,
}


def config_dir() -> Path:
    """The folder of shipped recipes: ``$DECOLA_CONFIG_DIR``, else the package's ``configs/``
    (in a source tree a link to the repository's ``configs/``, copied into wheels)."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "configs"


def list_recipes(root: Path | None = None) -> list[str]:
    """Names of every recipe below ``root`` (default: the shipped ``configs/``), sorted."""
    root = root or config_dir()
    if not root.is_dir():
        return []
    names = (p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))
    # Folders starting with "_" hold fragments that recipes inherit, not recipes.
    return sorted(n for n in names if not any(part.startswith("_") for part in n.split("/")))


def find_recipe(name_or_path: str | Path) -> Path:
    """Resolve a recipe name or a YAML path to an existing file, or raise a ConfigError."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if candidate.is_file():
            return candidate
        raise ConfigError(f"recipe file not found: {candidate}")
    root = config_dir()
    path = root / f"{text}.yaml"
    if path.is_file():
        return path
    if text in UNSUPPORTED_RECIPES:
        raise ConfigError(f"recipe '{text}' is not available: it uses {UNSUPPORTED_RECIPES[text]}")
    names = list_recipes(root)
    if not names:
        raise ConfigError(
            f"no recipes found in {root} (set {CONFIG_DIR_ENV} to the configs folder)"
        )
    hint = _did_you_mean(text, names)
    raise ConfigError(f"unknown recipe '{text}'{hint} ('decola config list' shows all recipes)")


def recipe_name(path: Path) -> str:
    """The recipe name of a file: its path below ``configs/`` without suffix, else its stem."""
    try:
        return path.resolve().relative_to(config_dir().resolve()).with_suffix("").as_posix()
    except ValueError:
        return path.stem


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; an empty file is an empty mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where} {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: mappings recursively, everything else replaced.

    A mapping in ``update`` holding ``_delete_: true`` replaces the base mapping instead of
    merging into it (e.g. switching the backbone type drops the old backbone's keys). The
    marker stays in the result so that it still applies when the result is itself merged onto
    another base; :func:`strip_markers` removes it before validation.
    """
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping):
            old = merged.get(key)
            if value.get(DELETE_KEY) or not isinstance(old, Mapping):
                old = {}
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def strip_markers(data: Any) -> Any:
    """A copy of a merged tree without ``_delete_`` markers."""
    if isinstance(data, Mapping):
        return {k: strip_markers(v) for k, v in data.items() if k != DELETE_KEY}
    if isinstance(data, list):
        return [strip_markers(v) for v in data]
    return data


def load_tree(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a YAML file with its ``_base_`` files merged underneath it."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path))
        raise ConfigError(f"{path}: _base_ inheritance cycle: {cycle}")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            try:
                base_path = find_recipe(base)
            except ConfigError:
                raise ConfigError(f"{path}: {BASE_KEY} file not found: {base}") from None
        merged = deep_merge(merged, load_tree(base_path, (*_chain, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-typed value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override '{text}': empty part in key '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of a raw recipe mapping with ``key.path=value`` overrides applied.

    Keys are checked by validation afterwards, which names any unknown key; list elements are
    addressed by index (``data.train.1.ratio=2``).
    """
    result = deep_merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = result
        for depth, part in enumerate(parts[:-1]):
            node = _child_for_write(node, part, ".".join(parts[:depth]), text)
        _assign(node, parts[-1], value, ".".join(parts[:-1]), text)
    return result


def _child_for_write(node: Any, part: str, parent: str, text: str) -> Any:
    """The child ``part`` of ``node`` (at key path ``parent``), copied so it can be modified."""
    if isinstance(node, list):
        index = _list_index(node, part, parent, text)
        node[index] = deep_merge({}, node[index]) if isinstance(node[index], dict) else node[index]
        return node[index]
    if not isinstance(node, dict):
        raise ConfigError(f"override '{text}': '{parent}' is not a mapping")
    child = node.get(part)
    if child is None:
        child = {}
    elif isinstance(child, dict):
        child = dict(child)
    elif isinstance(child, list):
        child = list(child)
    node[part] = child
    return child


def _assign(node: Any, part: str, value: Any, parent: str, text: str) -> None:
    if isinstance(node, list):
        node[_list_index(node, part, parent, text)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"override '{text}': cannot set '{part}' inside a {type(node).__name__}")


def _list_index(node: list[Any], part: str, path: str, text: str) -> int:
    if not part.lstrip("-").isdigit():
        raise ConfigError(f"override '{text}': '{path}' is a list; use an index, e.g. {path}.0")
    index = int(part)
    if not -len(node) <= index < len(node):
        raise ConfigError(f"override '{text}': index {index} out of range (list has {len(node)})")
    return index


def validate_recipe(data: Mapping[str, Any], source: str) -> Recipe:
    """Validate a raw mapping into a Recipe; errors become one-line ConfigErrors."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None


def format_validation_error(err: ValidationError, root: Any = Recipe) -> str:
    """All problems of a ValidationError on one line: ``key: message (got value)``.

    ``root`` is the model that was validated; it is used to suggest names for unknown keys.
    """
    problems = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{loc}'{_sibling_hint(item['loc'], root)}")
            continue
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        problems.append(f"{loc}: {message}{shown}" if loc else f"{message}{shown}")
    return "; ".join(problems)


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Load a recipe by name or path, apply dotted overrides and validate it."""
    path = find_recipe(name_or_path)
    data = strip_markers(load_tree(path))
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    data.setdefault("name", recipe_name(path))
    source = str(path) if not overrides else f"{path} (with --set overrides)"
    return validate_recipe(data, source)


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML, in schema order, every field written out."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, width=100)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    matches = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in choices}
        matches = [lowered[m] for m in difflib.get_close_matches(word.lower(), lowered, n=3)]
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def _sibling_hint(loc: tuple[Any, ...], root: Any) -> str:
    """Suggest a known field name for an unknown key at ``loc`` of model ``root``."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        model = _model_of(field.annotation) if field is not None else None
    fields = getattr(model, "model_fields", None)
    return _did_you_mean(str(loc[-1]), fields) if fields else ""


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as ``X``, ``list[X]`` or ``dict[str, X]``."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
