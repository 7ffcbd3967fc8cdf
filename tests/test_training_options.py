"""LoRA, gradient checkpointing and bf16 autocast through the LightningModule on a tiny backbone."""

import lightning.pytorch as pl
import pytest
import torch

from study.backbones.loading import load_backbone
from study.config import load_config
from study.inputs import InputBuilder
from study.losses import InfoNCE
from study.model import build_embedder
from study.module import ContrastiveModule
from study.train import PairCollator, optimizer_factory

ROWS = [
    {"query": "what is a cat", "instruction": "Find: ", "positive": "a cat is a small animal that purrs",
     "negatives": ["a car is a road vehicle"]},
    {"query": "what is rain", "instruction": "Find: ", "positive": "rain is water falling from clouds",
     "negatives": ["a rainbow is an arc of colours"]},
] * 2


def fit(overrides, steps=2):
    cfg = load_config(overrides=[f"trainer.max_steps={steps}", "optim.lr=1e-2", "optim.warmup_steps=0", *overrides])
    backbone = load_backbone(cfg.model, seed=0)
    embedder = build_embedder(backbone, cfg.model)
    before = {n: p.detach().clone() for n, p in embedder.named_parameters()}
    builder = InputBuilder(backbone.tokenizer, 64, backbone.padding_side)
    loader = torch.utils.data.DataLoader(ROWS, batch_size=2, collate_fn=PairCollator(builder, 1, True))
    module = ContrastiveModule(embedder, InfoNCE(0.05), optimizer_factory(cfg.optim, steps))
    trainer = pl.Trainer(max_steps=steps, precision=cfg.trainer.precision, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader)
    changed = {n for n, p in embedder.named_parameters() if not torch.equal(before[n], p.detach())}
    return embedder, changed, trainer.callback_metrics["train/loss"]


@pytest.mark.slow
def test_lora_trains_only_adapters_with_checkpointing_and_bf16():
    embedder, changed, loss = fit(["model.lora.r=4", "model.gradient_checkpointing=true",
                                   "trainer.precision=bf16-mixed"])
    assert torch.isfinite(loss)
    assert changed and all("lora_" in n for n in changed)
    assert any("q_proj.lora_A" in n for n in changed) and any("down_proj.lora_B" in n for n in changed)
    trainable = {n for n, p in embedder.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if "lora_" in n}
    assert embedder.backbone.base_model.model.is_activation_checkpointing


def test_full_fine_tuning_updates_the_backbone_in_fp32():
    _, changed, loss = fit(["trainer.precision=32-true"], steps=1)
    assert torch.isfinite(loss)
    assert any("layers.0.self_attn.q_proj.weight" in n for n in changed)
    assert any("embed_tokens" in n for n in changed)


def test_lora_targets_that_match_nothing_name_the_real_layers():
    from study.errors import ConfigError

    cfg = load_config(overrides=["model.lora.r=4", "model.lora.target_modules=[query,value]"])
    with pytest.raises(ConfigError, match=r"\['query', 'value'\].*q_proj"):
        load_backbone(cfg.model)
