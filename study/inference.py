"""An embedder outside training: build one from a config or load a finished run's, save it, evaluate it.

Training ends here (save + evaluate), and `study eval`, probes, export, the MTEB adapter and the benchmarks
start here: one place that knows a run folder's `model/` layout and how evaluation inputs are built.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from study.backbones.attention import verify_attention
from study.backbones.loading import Backbone, load_backbone
from study.backbones.tokenizer import load_tokenizer
from study.config import load_config
from study.errors import ConfigError
from study.evaluate import evaluate_task
from study.inputs import builder_from_config
from study.model import Embedder, build_embedder
from study.tasks import build_task

log = logging.getLogger(__name__)


def load_embedder(cfg: DictConfig, run_dir: Path | None = None) -> tuple[Embedder, Backbone]:
    """A finished run's embedder (`run_dir`), or an untrained / off-the-shelf one from `cfg.model`."""
    if run_dir is not None:
        embedder, backbone, _ = load_trained(run_dir)
        return embedder, backbone
    backbone = load_backbone(cfg.model, seed=cfg.seed)  # verifies the attention direction
    if cfg.model.pooling == "latent_attention":
        log.warning("model.pooling=latent_attention on an untrained model: the latent layer is random")
    return build_embedder(backbone, cfg.model), backbone


def load_trained(run_dir, verify: bool = True) -> tuple[Embedder, Backbone, DictConfig]:
    """Rebuild a finished run's embedder: (Embedder, Backbone, resolved config).

    Reads `<run_dir>/config.yaml` and `<run_dir>/model/` (written by `save_model`): the backbone with its
    trained attention direction (or the base model + LoRA adapter), the tokenizer and the pooler weights.
    """
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
        from peft import PeftModel  # optional: only runs trained with LoRA need peft

        backbone.model = PeftModel.from_pretrained(backbone.model, str(model_dir))
        backbone.tokenizer = load_tokenizer(str(model_dir))
    embedder = build_embedder(backbone, cfg.model)
    pooler_file = model_dir / "pooler.pt"
    if pooler_file.is_file():
        embedder.pooler.load_state_dict(torch.load(pooler_file, map_location="cpu"))
    embedder.eval()
    if verify:
        verify_attention(embedder.backbone, len(backbone.tokenizer), cfg.model.attention)
    backbone.name = cfg.model.backbone
    return embedder, backbone, cfg


def save_model(cfg: DictConfig, embedder: Embedder, backbone: Backbone, out: Path) -> None:
    """Backbone (or LoRA adapter), tokenizer, pooler weights and how to rebuild the embedder (`load_trained`)."""
    out.mkdir(parents=True, exist_ok=True)
    embedder.backbone.save_pretrained(out)
    backbone.tokenizer.save_pretrained(out)
    if any(True for _ in embedder.pooler.parameters()):
        torch.save(embedder.pooler.state_dict(), out / "pooler.pt")
    spec = {
        "backbone": cfg.model.backbone, "source": backbone.info["source"], "attention": cfg.model.attention,
        "pooling": cfg.model.pooling, "padding_side": backbone.padding_side, "append_eos": cfg.model.append_eos,
        "exclude_instruction": cfg.model.exclude_instruction, "max_length": cfg.model.max_length,
        "latent_attention": dict(cfg.model.latent_attention), "lora": cfg.model.lora.r > 0,
        "encoding": cfg.model.encoding, "chunk": dict(cfg.model.chunk), "mask_tokens": cfg.model.mask_tokens,
    }
    (out / "embedder.json").write_text(json.dumps(spec, indent=2))


def eval_builder(cfg: DictConfig, backbone: Backbone):
    """The input builder of evaluation: `eval.max_length` tokens, at most the backbone's positions."""
    limit = cfg.eval.max_length or backbone.max_positions or 1 << 20
    return builder_from_config(backbone.tokenizer, min(limit, backbone.max_positions or limit), backbone.padding_side,
                               cfg.model)


def warn_truncation(cfg: DictConfig, backbone: Backbone) -> None:
    """One log line when a requested evaluation length exceeds what the backbone can encode: those documents
    are truncated (each per-query row records encoded_length and answer_visible)."""
    positions = backbone.max_positions
    requested = max([*cfg.eval.lengths, cfg.eval.max_length or 0])
    if positions and requested > positions:
        log.warning("backbone %s has %d positions but evaluation asks for %d tokens (eval.lengths=%s, "
                    "eval.max_length=%s): documents are truncated to %d tokens; see encoded_length and "
                    "answer_visible in the results", cfg.model.backbone, positions, requested,
                    list(cfg.eval.lengths), cfg.eval.max_length, positions)


def build_tasks(cfg: DictConfig) -> list:
    """Every evaluation task, built (and so checked: data present and parseable) before any compute."""
    return [build_task(name, cfg.eval) for name in cfg.eval.tasks]


def evaluate_embedder(cfg: DictConfig, embedder: Embedder, backbone: Backbone, device, tasks=None,
                      cache=None) -> list[dict]:
    """Rows of every task in `cfg.eval.tasks` (or the already built `tasks`); `cache`: an embedding cache."""
    builder = eval_builder(cfg, backbone)
    warn_truncation(cfg, backbone)
    embedder.eval()
    rows = []
    for task in tasks if tasks is not None else build_tasks(cfg):
        rows += evaluate_task(embedder, builder, task, cfg.eval.batch_tokens, cfg.eval.precision, device,
                              cfg.eval.depth_buckets, cfg.model.use_instructions, cache=cache)
    return rows
