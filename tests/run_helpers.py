"""A run folder as `study train` leaves it (config.yaml + model/), without the training.

Export, mteb and the embedding cache read run folders; what they must preserve does not depend on
training, so most of their tests use freshly initialised weights (fast) and one uses a real run.
"""

from pathlib import Path

import torch


def make_run(root: Path, name: str, *overrides: str, perturb_lora: bool = False) -> Path:
    from study.backbones import load_backbone
    from study.config import load_config, save_config
    from study.model import build_embedder
    from study.train import save_model

    cfg = load_config(None, [f"run_name={name}", "eval.max_length=512", *overrides])
    backbone = load_backbone(cfg.model, seed=cfg.seed)  # a tiny LoRA run rebuilds its base from the seed
    embedder = build_embedder(backbone, cfg.model)
    if perturb_lora:  # LoRA B starts at zero; make the adapter matter so that merging is tested
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n, p in embedder.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    run_dir = root / name
    save_config(cfg, run_dir / "config.yaml")
    save_model(cfg, embedder, backbone, run_dir / "model")
    return run_dir
