"""Recipes: the pydantic schema, YAML loading with ``_base_`` inheritance, dotted overrides,
shorthand recipe selection and the importer for the original detectron2-style configs."""

from decola_core.config.loader import (
    apply_overrides,
    config_dir,
    dump_recipe,
    find_recipe,
    list_recipes,
    load_recipe,
)
from decola_core.config.schema import Recipe

__all__ = [
    "Recipe",
    "apply_overrides",
    "config_dir",
    "dump_recipe",
    "find_recipe",
    "list_recipes",
    "load_recipe",
]
