"""CLIP text embeddings of class names (open_clip, local weights only)."""

from decola_core.text.embeddings import (
    EmbeddingCache,
    embed_names,
    read_class_names,
    vocabulary_embeddings,
)
from decola_core.text.encoder import ClipTextEncoder

__all__ = [
    "ClipTextEncoder",
    "EmbeddingCache",
    "embed_names",
    "read_class_names",
    "vocabulary_embeddings",
]
