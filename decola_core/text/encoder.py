"""The CLIP text tower of open_clip, loaded from local weights, encoding prompts in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from decola_core.errors import ConfigError

#: OpenAI CLIP ViT-B/32, the model DECOLA's released embeddings come from.
DEFAULT_MODEL = "ViT-B-32-quickgelu"


class ClipTextEncoder:
    """Encodes prompts to unnormalised text embeddings (the projected end-of-text token).

    ``weights`` is a local ``.pt``/``.safetensors``/``.bin`` file of the full CLIP model (or
    ``None`` for random weights, for tests); ``model`` is an open_clip name or the path of an
    architecture config (``.json``). Batches are cut to their longest prompt: the text
    transformer's causal mask makes the end-of-text features independent of the padding.
    """

    def __init__(
        self, model: str = DEFAULT_MODEL, weights: str | Path | None = None, device: str = "cpu"
    ) -> None:
        import open_clip  # seconds to import: only when a text tower is built

        if model.endswith(".json"):  # an architecture config file: register it under its stem
            if not Path(model).is_file():
                raise ConfigError(f"open_clip model config not found: {model}")
            open_clip.add_model_config(Path(model))
            model = Path(model).stem
        if model not in open_clip.list_models():
            raise ConfigError(f"unknown open_clip model '{model}' (see open_clip.list_models())")
        if weights is not None and not Path(weights).is_file():
            raise ConfigError(f"CLIP weights file not found: {weights}")
        try:
            self.model = open_clip.create_model(
                model, pretrained=str(weights) if weights else None, device=device
            ).eval()
        except RuntimeError as err:
            raise ConfigError(f"{weights}: not {model} CLIP weights ({err})") from None
        self.tokenizer = open_clip.get_tokenizer(model)
        self.name, self.device = model, device

    @property
    def dim(self) -> int:
        projection = self.model.text_projection
        return int(
            projection.shape[1] if isinstance(projection, torch.Tensor) else projection.out_features
        )

    @torch.no_grad()
    def encode(self, prompts: list[str], batch_size: int = 256) -> np.ndarray:
        """(len(prompts), dim) float32 embeddings, not normalised."""
        rows = [
            self._encode_batch(prompts[i : i + batch_size])
            for i in range(0, len(prompts), batch_size)
        ]
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)

    def _encode_batch(self, prompts: list[str]) -> np.ndarray:
        m = self.model
        tokens = self.tokenizer(prompts).to(self.device)
        length = int((tokens != 0).sum(1).max())  # 0 pads after the end-of-text token
        tokens = tokens[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        projection = m.text_projection
        x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return x.float().cpu().numpy()
