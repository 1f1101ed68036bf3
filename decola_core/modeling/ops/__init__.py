"""Low-level operators with selectable backends."""

from decola_core.modeling.ops.ms_deform_attn import (
    available_backends,
    get_backend,
    ms_deform_attn,
    register_backend,
)

__all__ = ["available_backends", "get_backend", "ms_deform_attn", "register_backend"]
