"""The embedding model: backbone states -> pooled vector. Shared by training, evaluation and export."""

from __future__ import annotations

import torch
from torch import nn

from study.pooling import Pooler


class Embedder(nn.Module):
    def __init__(self, backbone: nn.Module, pooler: Pooler):
        super().__init__()
        self.backbone = backbone
        self.pooler = pooler

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        pooled = self.pooler(hidden, batch["pool_mask"])
        owner = batch.get("chunk_owner")
        return pooled if owner is None else mean_of_chunks(pooled, owner)


def mean_of_chunks(chunks: torch.Tensor, owner: torch.Tensor, num_docs: int | None = None) -> torch.Tensor:
    """model.encoding=chunked, aggregate=mean: per document the mean of its unit-norm chunk embeddings,
    renormalised ([chunks, D] + document index of each chunk -> [documents, D]); differentiable."""
    import torch.nn.functional as F

    num_docs = int(owner.max()) + 1 if num_docs is None else num_docs
    unit = F.normalize(chunks.float(), dim=-1)
    sums = torch.zeros(num_docs, unit.shape[1], dtype=unit.dtype, device=unit.device).index_add(0, owner.to(unit.device), unit)
    return F.normalize(sums, dim=-1).to(chunks.dtype)


def build_embedder(backbone, mcfg) -> Embedder:
    pooler = Pooler(
        mcfg.pooling,
        hidden_size=backbone.hidden_size,
        num_latents=mcfg.latent_attention.num_latents,
        num_heads=mcfg.latent_attention.num_heads,
    )
    return Embedder(backbone.model, pooler)


def load_trained(run_dir, verify: bool = True):
    """Rebuild a finished run's embedder: (Embedder, Backbone, resolved config).

    Reads `<run_dir>/config.yaml` and `<run_dir>/model/` (written by study.train.save_model):
    the backbone with its trained attention direction (or the base model + LoRA adapter),
    the tokenizer and the pooler weights. Used by `study eval`, export, probes and mteb.
    """
    import copy
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    from study.backbones import load_backbone
    from study.config import ConfigError, load_config

    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "embedder.json").is_file() or not (run_dir / "config.yaml").is_file():
        raise ConfigError(
            f"run folder {str(run_dir)!r} holds no trained model (needs config.yaml and model/embedder.json; "
            "was it trained with save_model=false, or is it still running?)"
        )
    spec = json.loads((model_dir / "embedder.json").read_text())
    cfg = load_config(run_dir / "config.yaml", validate_backbone=False)
    mcfg = copy.deepcopy(cfg.model)
    OmegaConf.set_readonly(mcfg, False)
    if spec.get("lora"):
        # The adapter lives in model/; the base weights are the original backbone.
        # (a tiny backbone's source "tiny:<family>" is not a name; its registry name rebuilds it)
        base = spec["backbone"] if spec["source"].startswith("tiny:") else spec["source"]
        mcfg.backbone, mcfg.lora.r = base, 0
    else:
        mcfg.backbone = str(model_dir)
    backbone = load_backbone(mcfg, seed=cfg.seed, verify=False)
    backbone.padding_side = spec["padding_side"]
    if spec.get("lora"):
        from peft import PeftModel

        from study.backbones.tokenizer import load_tokenizer

        backbone.model = PeftModel.from_pretrained(backbone.model, str(model_dir))
        backbone.tokenizer = load_tokenizer(str(model_dir))
    embedder = build_embedder(backbone, cfg.model)
    pooler_file = model_dir / "pooler.pt"
    if pooler_file.is_file():
        embedder.pooler.load_state_dict(torch.load(pooler_file, map_location="cpu"))
    embedder.eval()
    if verify:
        from study.backbones.attention import verify_attention

        verify_attention(embedder.backbone, len(backbone.tokenizer), cfg.model.attention)
    backbone.name = cfg.model.backbone
    return embedder, backbone, cfg
