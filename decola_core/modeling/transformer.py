"""The two-stage deformable transformer: encoder, proposals, query selection and decoder.

Module and parameter names follow the original (``encoder.layers.i.self_attn...``,
``decoder.layers.i.cross_attn...``, ``enc_output``, ``pos_trans``, ``pix_trans``) so released
checkpoints load by name. Class mode (K prompts x N queries, grouped decoder self-attention) and
object mode (one "a object" prompt, plain self-attention) share every weight.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn

from decola_core.errors import InputError
from decola_core.modeling.msda import MSDeformAttn
from decola_core.modeling.position import proposal_position_embedding
from decola_core.structures.boxes import inverse_sigmoid

N_POINTS = 4  # sampling points per head and level (fixed in the original)

Record = dict[str, torch.Tensor] | None


def _grid(h, w, device, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w) float32 row and column indices (+ ``offset``): ``meshgrid(..., indexing="ij")``
    by broadcasting, which keeps h and w symbolic (and right) under ONNX export."""
    ys = torch.arange(h, dtype=torch.float32, device=device) + offset
    xs = torch.arange(w, dtype=torch.float32, device=device) + offset
    return ys[:, None].expand(h, w), xs[None, :].expand(h, w)


def _run(layer: nn.Module, use_checkpoint: bool, *args):
    """Call ``layer``, recomputing its activations in backward when ``use_checkpoint``."""
    if use_checkpoint:
        return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


def _record(record: Record, name: str, value: torch.Tensor) -> None:
    if record is not None:
        record[name] = value.detach()


class EncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, N_POINTS)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask):
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(torch.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class DecoderLayer(nn.Module):
    """Self-attention (optionally within query groups), deformable cross-attention, FFN."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, N_POINTS)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt,
        query_pos,
        reference_points,
        memory,
        spatial_shapes,
        padding_mask,
        grouping: QueryGrouping | None = None,
    ):
        rolled_tgt, rolled_pos = tgt, query_pos
        if grouping is not None:
            rolled_tgt, rolled_pos = grouping.roll(tgt), grouping.roll(query_pos)
        q = k = (rolled_tgt + rolled_pos).transpose(0, 1)
        attn = self.self_attn(q, k, rolled_tgt.transpose(0, 1))[0].transpose(0, 1)
        rolled_tgt = self.norm2(rolled_tgt + self.dropout2(attn))
        tgt = grouping.unroll(rolled_tgt) if grouping is not None else rolled_tgt
        attn = self.cross_attn(
            tgt + query_pos, reference_points, memory, spatial_shapes, padding_mask
        )
        tgt = self.norm1(tgt + self.dropout1(attn))
        ffn = self.linear2(self.dropout3(torch.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


@dataclass(frozen=True)
class QueryGrouping:
    """Which class-mode queries attend to each other (queries are laid out q = n * K + k).

    ``grouped`` reproduces the original exactly: the flat queries are read as (K, n) and
    transposed, so groups are {q : q mod n = j}; they hold one prompt only when K divides n.
    ``block_diagonal`` is the intended per-prompt attention: group k = the n queries of prompt k.
    """

    num_prompts: int
    per_prompt: int
    mode: str = "grouped"

    def roll(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        k, n = self.num_prompts, self.per_prompt
        if self.mode == "grouped":
            return x.view(batch, k, n, channels).transpose(1, 2).reshape(batch * n, k, channels)
        return x.view(batch, n, k, channels).transpose(1, 2).reshape(batch * k, n, channels)

    def unroll(self, x: torch.Tensor) -> torch.Tensor:
        k, n = self.num_prompts, self.per_prompt
        channels = x.shape[-1]
        if self.mode == "grouped":
            batch = x.shape[0] // n
            return x.view(batch, n, k, channels).transpose(1, 2).reshape(batch, k * n, channels)
        batch = x.shape[0] // k
        return x.view(batch, k, n, channels).transpose(1, 2).reshape(batch, n * k, channels)


@dataclass
class FirstStage:
    """What the encoder hands to the decoder and to the first-stage loss."""

    logits: torch.Tensor  # (B, S, K) or (B, S, 1)
    box_logits: torch.Tensor  # (B, S, 4), +inf at padded/invalid tokens
    prompt_ids: torch.Tensor | None  # (B, K) prompt rows, None in object mode
    topk_inds: torch.Tensor  # (B, N, K) or (B, Q)


@dataclass
class FirstStageScores:
    """How the first stage scores encoder tokens, given by the detector family."""

    score: Callable[[torch.Tensor], torch.Tensor]  # output memory (B, S, C) -> (B, S, K | 1)
    prompt_ids: torch.Tensor | None  # (B, K) class mode; None: object mode
    prompt_table: torch.Tensor | None = None  # prompt embeddings (use_prompt_embed_as_query)

    @property
    def class_mode(self) -> bool:
        return self.prompt_ids is not None


@dataclass
class QuerySelection:
    """The encoder tokens that become decoder queries."""

    topk_inds: torch.Tensor  # (B, N, K) class mode, (B, Q) object mode
    flat: torch.Tensor  # (B, Q) token index of each query (class mode: q = i * K + k)
    prompt_inds: torch.Tensor | None  # (B, Q) class id of each query's prompt (class mode)
    grouping: QueryGrouping | None  # which queries attend to each other (class mode)


@dataclass
class TransformerOutput:
    hs: torch.Tensor  # (L_dec, B, Q, C)
    init_reference: torch.Tensor  # (B, Q, 4)
    inter_references: torch.Tensor  # (L_dec, B, Q, 4)
    prompt_inds: torch.Tensor | None  # (B, Q) class id of each query's prompt
    first_stage: FirstStage


class DeformableTransformer(nn.Module):
    """Deformable encoder + two-stage proposals + decoder with box refinement.

    ``decoder.bbox_embed`` and ``decoder.class_embed`` are attached by the detector (the same
    module lists as the detector's heads, as in the original).
    """

    def __init__(
        self,
        *,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
        dropout: float,
        num_feature_levels: int,
        num_queries: int,
        look_forward_twice: bool,
        per_prompt_topk: int | None = None,
        use_pixel_feature_as_query: bool = False,
        self_attention: str = "grouped",
        reinit_decoder: bool = False,
        prompt_embed_dim: int | None = None,
        encoder_checkpoint: bool = False,
        decoder_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_queries = num_queries
        self.per_prompt_topk = per_prompt_topk
        self.look_forward_twice = look_forward_twice
        self.self_attention = self_attention
        self.encoder_checkpoint, self.decoder_checkpoint = encoder_checkpoint, decoder_checkpoint
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        layer = EncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_encoder_layers))
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
        self.pos_trans_norm = nn.LayerNorm(d_model * 2)
        self._reset_parameters()
        # The DECOLA decoder and pixel projection were built after the original's re-init, so
        # they keep PyTorch's default initialisation.
        dec_layer = DecoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead)
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(
            copy.deepcopy(dec_layer) for _ in range(num_decoder_layers)
        )
        if reinit_decoder:  # the stock decoder (baseline) shares the transformer's init
            for p in self.decoder.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            for m in self.decoder.modules():
                if isinstance(m, MSDeformAttn):
                    m.reset_parameters()
        if use_pixel_feature_as_query:
            self.pix_trans = nn.Linear(d_model, d_model)
            self.pix_trans_norm = nn.LayerNorm(d_model)
        else:
            self.pix_trans = None
        if prompt_embed_dim is not None:  # ablation: the prompt's text embedding enters the query
            self.prompt_embed_trans = nn.Linear(prompt_embed_dim, d_model)
            self.prompt_embed_trans_norm = nn.LayerNorm(d_model)
        else:
            self.prompt_embed_trans = None

    @classmethod
    def from_config(cls, model_cfg, **options) -> DeformableTransformer:
        """The transformer sized by a recipe's ``model.transformer``; ``options`` are the
        family-specific constructor arguments."""
        t = model_cfg.transformer
        return cls(
            d_model=t.hidden_dim,
            nhead=t.nheads,
            num_encoder_layers=t.enc_layers,
            num_decoder_layers=t.dec_layers,
            dim_feedforward=t.dim_feedforward,
            dropout=t.dropout,
            num_feature_levels=t.num_feature_levels,
            num_queries=t.num_queries,
            look_forward_twice=t.look_forward_twice,
            **options,
        )

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    # ---- encoder ----------------------------------------------------------------------------

    @staticmethod
    def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
        _, height, width = mask.shape
        valid_h = torch.sum(~mask[:, :, 0], 1)
        valid_w = torch.sum(~mask[:, 0, :], 1)
        return torch.stack([valid_w.float() / width, valid_h.float() / height], -1)

    @staticmethod
    def encoder_reference_points(spatial_shapes, valid_ratios, device) -> torch.Tensor:
        points = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = _grid(h, w, device, offset=0.5)
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            points.append(torch.stack((ref_x, ref_y), -1))
        reference = torch.cat(points, 1)
        return reference[:, :, None] * valid_ratios[:, None]

    def encode(self, srcs, masks, pos_embeds, record: Record = None):
        """Flatten the levels and run the encoder -> (memory, mask, spatial shapes, ratios)."""
        spatial_shapes = [(s.shape[2], s.shape[3]) for s in srcs]  # symbolic under export
        src_flatten = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        mask_flatten = torch.cat([m.flatten(1) for m in masks], 1)
        pos_flatten = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        valid_ratios = torch.stack([self.valid_ratios(m) for m in masks], 1)
        _record(record, "spatial_shapes", torch.tensor(spatial_shapes))
        _record(record, "valid_ratios", valid_ratios)
        _record(record, "mask_flatten", mask_flatten)
        _record(record, "enc_src_flatten", src_flatten)
        _record(record, "enc_pos_flatten", pos_flatten)
        reference = self.encoder_reference_points(spatial_shapes, valid_ratios, src_flatten.device)
        memory = src_flatten
        for layer in self.encoder.layers:
            memory = _run(
                layer,
                self.encoder_checkpoint and self.training,
                memory,
                pos_flatten,
                reference,
                spatial_shapes,
                mask_flatten,
            )
        _record(record, "memory", memory)
        return memory, mask_flatten, spatial_shapes, valid_ratios

    def encoder_proposals(self, memory, mask_flatten, spatial_shapes):
        """Anchor-like proposals per token (logit space, +inf where invalid) and the memory
        projected for the first-stage heads."""
        batch = memory.shape[0]
        proposals, start = [], 0
        for lvl, (h, w) in enumerate(spatial_shapes):
            level_mask = mask_flatten[:, start : start + h * w].view(batch, h, w, 1)
            valid_h = torch.sum(~level_mask[:, :, 0, 0], 1)
            valid_w = torch.sum(~level_mask[:, 0, :, 0], 1)
            grid_y, grid_x = _grid(h, w, memory.device)
            grid = torch.cat([grid_x.unsqueeze(-1), grid_y.unsqueeze(-1)], -1)
            scale = torch.cat([valid_w.unsqueeze(-1), valid_h.unsqueeze(-1)], 1).view(
                batch, 1, 1, 2
            )
            grid = (grid.unsqueeze(0).expand(batch, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
            proposals.append(torch.cat((grid, wh), -1).view(batch, -1, 4))
            start += h * w
        output_proposals = torch.cat(proposals, 1)
        valid = ((output_proposals > 0.01) & (output_proposals < 0.99)).all(-1, keepdim=True)
        output_proposals = torch.log(output_proposals / (1 - output_proposals))
        output_proposals = output_proposals.masked_fill(mask_flatten.unsqueeze(-1), float("inf"))
        output_proposals = output_proposals.masked_fill(~valid, float("inf"))
        output_memory = memory.masked_fill(mask_flatten.unsqueeze(-1), 0.0)
        output_memory = output_memory.masked_fill(~valid, 0.0)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        return output_memory, output_proposals

    # ---- full forward -------------------------------------------------------------------------

    def forward(
        self,
        srcs: list[torch.Tensor],
        masks: list[torch.Tensor],
        pos_embeds: list[torch.Tensor],
        *,
        scores: FirstStageScores,
        record: Record = None,
    ) -> TransformerOutput:
        """Encode, score the tokens (``scores``), select queries and decode."""
        memory, mask_flatten, spatial_shapes, valid_ratios = self.encode(
            srcs, masks, pos_embeds, record
        )
        output_memory, output_proposals = self.encoder_proposals(
            memory, mask_flatten, spatial_shapes
        )
        _record(record, "output_memory", output_memory)
        _record(record, "output_proposals", output_proposals)
        num_layers = len(self.decoder.layers)
        box_delta = self.decoder.bbox_embed[num_layers](output_memory)
        _record(record, "first_stage_box_delta", box_delta)
        box_logits = box_delta + output_proposals
        logits = scores.score(output_memory)
        _record(record, "first_stage_logits", logits)
        selection = self.select_queries(logits, scores.prompt_ids)
        _record(record, "first_stage_topk_inds", selection.topk_inds)
        flat, prompt_inds = selection.flat, selection.prompt_inds
        channels = output_memory.shape[2]
        coords = torch.gather(box_logits, 1, flat.unsqueeze(-1).expand(-1, -1, 4)).detach()
        reference = coords.sigmoid()
        query = self.pos_trans_norm(
            self.pos_trans(proposal_position_embedding(coords, self.d_model // 2))
        )
        query_pos, tgt = torch.split(query, channels, dim=2)
        if self.pix_trans is not None:
            pixels = torch.gather(
                output_memory, 1, flat.unsqueeze(-1).expand(-1, -1, channels)
            ).detach()
            tgt = tgt + self.pix_trans_norm(self.pix_trans(pixels))
        if self.prompt_embed_trans is not None:
            table = scores.prompt_table
            if table is None:
                raise InputError("use_prompt_embed_as_query needs the prompt embedding table")
            if scores.class_mode:
                embeds = table[prompt_inds]
            else:  # the "a object" row for every query
                embeds = table[-1].expand(tgt.shape[0], tgt.shape[1], -1)
            tgt = tgt + self.prompt_embed_trans_norm(self.prompt_embed_trans(embeds))
        _record(record, "dec_tgt_init", tgt)
        _record(record, "dec_query_pos", query_pos)
        _record(record, "dec_reference_init", reference)
        hs, inter_refs = self.decode(
            tgt,
            query_pos,
            reference,
            memory,
            mask_flatten,
            spatial_shapes,
            valid_ratios,
            selection.grouping,
        )
        _record(record, "dec_hs", hs)
        _record(record, "dec_inter_references", inter_refs)
        first = FirstStage(logits, box_logits, scores.prompt_ids, selection.topk_inds)
        return TransformerOutput(hs, reference, inter_refs, prompt_inds, first)

    def select_queries(
        self, logits: torch.Tensor, prompt_ids: torch.Tensor | None
    ) -> QuerySelection:
        """First-stage query selection: the top ``per_prompt_topk`` tokens of every prompt
        (class mode, logits (B, S, K)) or the top ``num_queries`` tokens by channel 0 (object
        mode)."""
        batch, tokens, _ = logits.shape
        if prompt_ids is not None:
            n = self.per_prompt_topk
            if tokens < n:
                raise InputError(
                    f"the image gives {tokens} encoder tokens, fewer than per_prompt_topk={n}; "
                    "use larger images or a smaller model.decola.per_prompt_topk"
                )
            num_prompts = logits.shape[2]
            topk_inds = torch.topk(logits, n, dim=1)[1]  # (B, n, K)
            flat = topk_inds.reshape(batch, n * num_prompts)  # n-major: q = i * K + k
            prompt_inds = prompt_ids[:, None, :].expand(batch, n, num_prompts).reshape(batch, -1)
            return QuerySelection(
                topk_inds, flat, prompt_inds, QueryGrouping(num_prompts, n, self.self_attention)
            )
        if tokens < self.num_queries:
            raise InputError(
                f"the image gives {tokens} encoder tokens, fewer than "
                f"num_queries={self.num_queries}; use larger images"
            )
        topk_inds = torch.topk(logits[..., 0], self.num_queries, dim=1)[1]
        return QuerySelection(topk_inds, topk_inds, None, None)

    def decode(
        self,
        tgt,
        query_pos,
        reference,
        memory,
        mask_flatten,
        spatial_shapes,
        valid_ratios,
        grouping,
    ):
        """Decoder layers with iterative box refinement (and look-forward-twice)."""
        output, hs, refs = tgt, [], []
        level_ratios = torch.cat([valid_ratios, valid_ratios], -1)[:, None]
        for lid, layer in enumerate(self.decoder.layers):
            reference_input = reference[:, :, None] * level_ratios
            output = layer(
                output, query_pos, reference_input, memory, spatial_shapes, mask_flatten, grouping
            )
            new_reference = (
                self.decoder.bbox_embed[lid](output) + inverse_sigmoid(reference)
            ).sigmoid()
            reference = new_reference.detach()
            hs.append(output)
            refs.append(new_reference if self.look_forward_twice else reference)
        return torch.stack(hs), torch.stack(refs)
