"""``build_model(recipe)``: the native network of a recipe, from the family registered for its
``model.architecture``."""

from __future__ import annotations

from pathlib import Path

from decola_core.config.schema import Recipe
from decola_core.modeling.interface import DetectionModel, family
from decola_core.modeling.resources import embedding_provenance


def build_model(recipe: Recipe, *, data_root: Path | str = "datasets") -> DetectionModel:
    """Build the (randomly initialised) network of ``recipe``.

    Class embeddings and category statistics are read from the recipe's files below
    ``data_root``; weights are loaded separately with :func:`load_weights`. The model's
    ``embedding_provenance`` says where its class embeddings come from (None: unknown).
    """
    model = family(recipe.model.architecture).from_recipe(recipe, data_root=Path(data_root))
    model.embedding_provenance = embedding_provenance(recipe, data_root)
    model.compile_network = recipe.solver.compile
    return model
