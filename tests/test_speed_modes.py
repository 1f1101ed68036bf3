"""torch.compile and bf16 on CPU: the same numbers as eager fp32, within stated tolerances."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from decola_core.config import load_recipe
from decola_core.data.toy import ensure_toy_dataset
from decola_core.engine.distributed import DistContext
from decola_core.engine.trainer import Trainer, TrainOptions
from decola_core.modeling import build_model
from decola_core.modeling.criterion import total_loss

#: The toy detector cut to one encoder and one decoder layer on two levels: the same code paths,
#: half the kernels for inductor to generate and gcc to build.
SMALL_TOY = [
    "model.transformer.enc_layers=1",
    "model.transformer.dec_layers=1",
    "model.transformer.num_feature_levels=2",
    "model.transformer.in_features=[layer3,layer4]",
    "model.backbone.out_levels=[3,4]",
]


def small_toy_model(data_root: Path, *extra: str):
    ensure_toy_dataset(data_root)
    torch.manual_seed(0)
    return build_model(
        load_recipe("toy/DECOLA_PHASE1_Toy", [*SMALL_TOY, *extra]), data_root=data_root
    )


def toy_batch():
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, 64, 64), generator=gen, dtype=torch.uint8) for _ in range(2)
    ]
    targets = [
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]])},
        {
            "labels": torch.tensor([3, 1]),
            "boxes": torch.tensor([[0.3, 0.6, 0.2, 0.2], [0.7, 0.3, 0.3, 0.3]]),
        },
    ]
    return images, targets, torch.tensor([1, 3])


def train_step(model, images, targets, prompts):
    """Outputs, loss and parameter gradients of one forward and backward pass."""
    model.zero_grad(set_to_none=True)
    out = model(images, prompts)
    loss = total_loss(model.criterion(out, targets))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, loss, grads


def assert_same_step(out, loss, grads, ref_out, ref_loss, ref_grads) -> None:
    """Logits and loss within 1e-5; each parameter's gradient within 1e-4 as a whole (a conv
    weight's gradient sums thousands of products, in another order)."""
    torch.testing.assert_close(out.pred_logits, ref_out.pred_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        error = (grad - ref_grads[name]).norm() / ref_grads[name].norm().clamp_min(1e-12)
        assert error < 1e-4, (name, float(error))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_detr_network_step_compiles_without_graph_breaks(tmp_path: Path, training: bool) -> None:
    """The whole DETR network step (backbone to box heads) is one graph in class and object
    mode: nothing falls back to Python between kernels."""
    model = small_toy_model(tmp_path).train(training)
    images, _, prompts = toy_batch()
    batch = model.preprocess(images)
    for mode_prompts in (prompts, None):
        explained = torch._dynamo.explain(type(model).forward_batch)(model, batch, mode_prompts)
        assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
        assert explained.graph_count == 1


def test_centernet2_compiles_backbone_and_fpn_as_one_graph(tmp_path: Path) -> None:
    """CenterNet2 compiles its dense part only (what `call_network` wraps): one graph."""
    from decola_core.data.toy import ensure_toy_data

    recipe = load_recipe("toy/BoxSup-C2_Toy")
    ensure_toy_data(recipe, tmp_path)
    model = build_model(recipe, data_root=tmp_path).eval()
    batch, _ = model.preprocess(toy_batch()[0])
    explained = torch._dynamo.explain(type(model).features)(model, batch)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_compiled_train_step_equals_eager(tmp_path: Path) -> None:
    """Inductor (gcc on this CPU) runs the toy network: outputs within 1e-5 of eager, the same
    losses and gradients, and an optimiser step; `solver.compile` is what switches it on."""
    torch._dynamo.reset()
    compiled = small_toy_model(tmp_path, "solver.compile=true").train()
    eager = copy.deepcopy(compiled)
    eager.compile_network = False
    assert compiled.compile_network
    images, targets, prompts = toy_batch()
    eager_out, eager_loss, eager_grads = train_step(eager, images, targets, prompts)
    out, loss, grads = train_step(compiled, images, targets, prompts)
    torch.testing.assert_close(out.pred_boxes, eager_out.pred_boxes, rtol=1e-5, atol=1e-5)
    assert_same_step(out, loss, grads, eager_out, eager_loss, eager_grads)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames >= 1  # the forward really went through dynamo
    optimizer = torch.optim.AdamW(compiled.parameters(), lr=1e-3)
    optimizer.step()
    optimizer.zero_grad()
    again = compiled(images, prompts)  # same shapes: the compiled graph is reused
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    assert not torch.equal(again.pred_boxes, out.pred_boxes)  # the step changed the weights


def train_losses(tmp_path: Path, amp: str, iterations: int) -> list[float]:
    data_root = tmp_path / "data"
    ensure_toy_dataset(data_root)
    overrides = [
        *SMALL_TOY,
        "logging.period=1",
        f"solver.amp='{amp}'",
        "model.decola.prob_a_object=0",
    ]
    recipe = load_recipe("toy/DECOLA_PHASE1_Toy", overrides)
    out = tmp_path / amp
    out.mkdir()
    options = TrainOptions(output_dir=out, data_root=data_root, max_iter=iterations)
    Trainer(recipe, options, DistContext(), lambda r: build_model(r, data_root=data_root)).run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["total_loss"] for row in rows]


#: The first steps' losses: bf16 (8 bits of mantissa) within this fraction of fp32's, each.
BF16_EARLY_RTOL = 0.05
#: Later, Hungarian matching makes the two runs take different paths; their mean loss over the
#: second half of the run stays within this fraction.
BF16_MEAN_RTOL = 0.15


def test_bf16_training_follows_the_fp32_loss_curve(tmp_path: Path) -> None:
    """solver.amp=bf16 on CPU: every loss finite; the first 3 steps within 5% of fp32's, the
    mean of the second half within 15%, and the loss falls as in fp32."""
    iterations = 12
    fp32 = torch.tensor(train_losses(tmp_path, "off", iterations))
    bf16 = torch.tensor(train_losses(tmp_path, "bf16", iterations))
    assert len(fp32) == len(bf16) == iterations
    assert torch.isfinite(bf16).all()
    assert not torch.equal(fp32, bf16)  # autocast really changed the arithmetic
    early = ((bf16 - fp32).abs() / fp32.abs())[:3]
    assert (early <= BF16_EARLY_RTOL).all(), (fp32.tolist(), bf16.tolist())
    late_fp32, late_bf16 = fp32[iterations // 2 :].mean(), bf16[iterations // 2 :].mean()
    assert abs(late_bf16 - late_fp32) <= BF16_MEAN_RTOL * late_fp32, (fp32.tolist(), bf16.tolist())
    assert late_bf16 < bf16[1:3].mean()  # it learns


def test_triton_backend_trains_the_toy_network_like_pytorch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole toy network with the Triton kernels (in the interpreter): the same outputs,
    loss and gradients as with the pytorch backend. The initial sampling offsets put many
    points exactly between pixels, where the location gradient is one-sided: the kernels
    round as grid_sample does, so they take the same side."""
    from decola_core.modeling.ops.ms_deform_attn_triton import triton_import_error

    if triton_import_error():
        pytest.skip(triton_import_error())
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = small_toy_model(tmp_path).train()
    images, targets, prompts = toy_batch()
    steps = []
    for backend in ("pytorch", "triton"):
        monkeypatch.setenv("DECOLA_MSDA_BACKEND", backend)
        steps.append(train_step(model, images, targets, prompts))
    assert_same_step(*steps[1], *steps[0])


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_compile_and_amp_options_reach_the_recipe(amp: str) -> None:
    from decola_cli.commands.predict import PredictSettings
    from decola_cli.commands.train import TrainSettings

    recipe = TrainSettings(phase=1, dataset="toy", compile=True, amp=amp).load_recipe()
    assert recipe.solver.compile and recipe.solver.amp == amp
    assert not TrainSettings(phase=1, dataset="toy").load_recipe().solver.compile
    predict = PredictSettings(inputs=[Path("a.png")], compile=True)
    assert "solver.compile=true" in predict.recipe_overrides()
