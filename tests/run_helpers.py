"""A run folder as `study train` leaves it (config.yaml + model/), without the training.

Export, mteb and the embedding cache read run folders; what they must preserve does not depend on
training, so most of their tests use freshly initialised weights (fast) and one uses a real run.
"""

from pathlib import Path

import torch
import yaml


def make_run(root: Path, name: str, *overrides: str, perturb_lora: bool = False) -> Path:
    from study.backbones.loading import load_backbone
    from study.config import load_config, save_config
    from study.inference import save_model
    from study.model import build_embedder

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


# The base of a sweep whose trials take seconds: a few steps, a few queries.
TINY_BASE = {
    "trainer": {"max_steps": 3, "batch_size": 4, "val_check_interval": 3, "log_every_n_steps": 1},
    "data": {"num_pairs": 32, "num_val_pairs": 8, "doc_max_words": 80},
    "eval": {"lengths": [128], "num_queries": 4, "num_docs": 8, "tasks": ["passkey"]},
    "model": {"max_length": 128},
    "save_model": False,
}


def write_sweep_spec(tmp_path: Path, name: str, base: dict, /, **changes) -> Path:
    """A one-seed grid sweep file on `base` (output under tmp_path/runs), quick heartbeats; `changes` replace
    top-level keys (`space` among them)."""
    spec = {"name": name, "base": {**base, "output_dir": str(tmp_path / "runs")}, "space": {},
            "sampler": "grid", "seeds": [0], "objective": {"metric": "average/ndcg_at_1", "direction": "maximize"},
            "heartbeat": {"interval": 1, "grace_period": 3}}
    spec.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
