"""Any trained run (or an off-the-shelf backbone config) as an mteb model, for LongEmbed, BRIGHT, FollowIR, MTEB.

    import mteb
    from study.mteb_adapter import StudyEncoder
    model = StudyEncoder.from_run("runs/<run>")
    mteb.evaluate(model, mteb.get_tasks(tasks=["LEMBNeedleRetrieval"]))

mteb hands `encode` a DataLoader (texts in batch["text"]); we gather the texts and use the project's own
encoder (study.encode.encode: length-sorted token-budget batches, precision=auto), so scores under mteb
and under `study eval` come from the same vectors. The model is used as trained:
  * attention and pooling come from the run (load_trained rebuilds and re-verifies them);
  * queries get an instruction, documents none, as in training and in our own tasks. The instruction is
    the task's own mteb prompt (task metadata, else mteb's default for the task type) written as
    "<prompt>: ", our training format; symmetric tasks (no prompt type: STS, classification, ...)
    instruct every text. `use_instructions=False` turns instructions off, as model.use_instructions does;
  * similarity is cosine (the embeddings are unit-norm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from study.embedding_cache import run_cache
from study.encode import encode
from study.inference import eval_builder, load_embedder, load_trained


def _instruction_template(instruction: str, prompt_type: PromptType | None) -> str:
    instruction = instruction.strip().rstrip(".:").rstrip()
    return instruction + ": " if instruction else ""


class StudyEncoder(AbsEncoder):
    """mteb EncoderProtocol over a study Embedder + InputBuilder."""

    instruction_template = staticmethod(_instruction_template)

    def __init__(self, embedder, builder, *, name: str, revision: str | None = None, use_instructions: bool = True,
                 batch_tokens: int = 32768, precision: str = "auto", device: str = "cpu", cache=None,
                 experiment: dict | None = None):
        import torch

        self.model = embedder.to(device).eval()
        self.builder = builder
        self.use_instructions = use_instructions
        self.batch_tokens = batch_tokens
        self.precision = precision
        self.device = torch.device(device)
        self.cache = cache
        params = sum(p.numel() for p in embedder.parameters())
        hidden = getattr(getattr(embedder.backbone, "config", None), "hidden_size", None)
        self.mteb_model_meta = ModelMeta.create_empty({
            "name": name if "/" in name else f"study/{name}",
            "revision": revision or "no_revision_available",
            "n_parameters": params,
            "max_tokens": builder.max_length,
            "embed_dim": hidden,
            "similarity_fn_name": ScoringFunction.COSINE,
            "use_instructions": use_instructions,
            "framework": ["PyTorch"],
            "open_weights": True,
            "experiment_kwargs": experiment or None,
        })

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_run(cls, run_dir: str | Path, cache: bool = False, **kwargs: Any) -> "StudyEncoder":
        """A finished run; `cache=True` stores corpus embeddings under <run>/embeddings/ for cheap re-runs."""

        run_dir = Path(run_dir)
        embedder, backbone, cfg = load_trained(run_dir)
        store = None
        if cache:

            store = run_cache(run_dir, embedder, cfg.model)
        kwargs.setdefault("use_instructions", cfg.model.use_instructions)
        kwargs.setdefault("batch_tokens", cfg.eval.batch_tokens)
        kwargs.setdefault("precision", cfg.eval.precision)
        return cls(embedder, eval_builder(cfg, backbone), name=f"study/{run_dir.name}", cache=store,
                   experiment={"attention": cfg.model.attention, "pooling": cfg.model.pooling}, **kwargs)

    @classmethod
    def from_config(cls, cfg, **kwargs: Any) -> "StudyEncoder":
        """An untrained/off-the-shelf backbone described by config keys (model.backbone, attention, pooling)."""

        embedder, backbone = load_embedder(cfg)
        kwargs.setdefault("use_instructions", cfg.model.use_instructions)
        kwargs.setdefault("batch_tokens", cfg.eval.batch_tokens)
        kwargs.setdefault("precision", cfg.eval.precision)
        name = Path(cfg.model.backbone).name if Path(cfg.model.backbone).exists() else cfg.model.backbone
        return cls(embedder, eval_builder(cfg, backbone), name=f"study/{name.replace('/', '__')}",
                   experiment={"attention": cfg.model.attention, "pooling": cfg.model.pooling}, **kwargs)

    # ---------------------------------------------------------------- EncoderProtocol

    def instruction_for(self, task_metadata, prompt_type: PromptType | None) -> str:
        """The instruction prefix for this task and side ('' for documents or with instructions off)."""
        if not self.use_instructions or prompt_type == PromptType.document:
            return ""
        return self.get_task_instruction(task_metadata, prompt_type)

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:

        texts = [text for batch in inputs for text in batch["text"]]
        return encode(self.model, self.builder, texts, self.instruction_for(task_metadata, prompt_type),
                      self.batch_tokens, self.precision, self.device, cache=self.cache)
