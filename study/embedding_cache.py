"""A content-addressed cache of embeddings, so re-evaluating a checkpoint does not re-encode its corpora.

An entry is keyed by everything that decides the vectors:
  * the model: a fingerprint of its weights (`weights_fingerprint`, or of the saved files of a run:
    `files_fingerprint`), fixed when the cache is made, combined (`model_key`) with every setting that lives
    outside the weights: the whole resolved `model` config (attention direction, pooling and its parameters,
    max_length, dtype, attention kernel, ...), the backbone's own config and the torch and
    transformers versions;
  * the input builder: tokenizer vocabulary size, max_length, padding side, special tokens, whether the
    instruction is pooled, the instruction text itself, and (when not the defaults) the encoding
    (`echo`, `chunked` with its chunk settings) and the appended mask tokens -- also part of the model config,
    so an echo and a full evaluation never share an entry even under one model key;
  * what is stored: document vectors, or the chunk vectors of chunked documents (`kind`);
  * the precision of the forward pass;
  * the texts (a hash of their content, in order) -- so a changed task simply misses.

Entries are .npy files written atomically; a corrupt or half-written file is never read as a hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

VERSION = 2  # bump when the key recipe changes


def _hash(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()


def weights_fingerprint(module, extra: str = "") -> str:
    """Hash of every parameter and buffer of a module (and its class names): the model's identity.

    Costs one pass over the weights (about a second per GB); computed once per cache.
    """
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(extra.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for m in module.modules():
        h.update(type(m).__name__.encode())
        mode = getattr(m, "mode", None)
        if isinstance(mode, str):
            h.update(mode.encode())
    return h.hexdigest()


def _backbone_configs(module) -> list[str]:
    """The JSON of every Hugging Face config inside a module (rope, norms, kernels live there, not in weights)."""
    out = []
    for m in module.modules():
        config = getattr(m, "config", None)
        if hasattr(config, "to_json_string"):
            out.append(config.to_json_string(use_diff=False))
    return sorted(set(out))


def settings_fingerprint(model_cfg, module=None) -> str:
    """Hash of everything outside the weights that changes a vector: the resolved model config (a dict or a
    DictConfig), the backbone configs found in `module`, and library versions. (The forward precision and
    the input builder are part of each entry's key.)"""
    import torch
    import transformers
    from omegaconf import DictConfig, OmegaConf

    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    return _hash(json.dumps(model_cfg, sort_keys=True, default=str), torch.__version__,
                 transformers.__version__, *(_backbone_configs(module) if module is not None else []))


def model_key(embedder, model_cfg, model_dir: Path | None = None) -> str:
    """The cache identity of (weights, settings): two evaluations share entries only if both agree."""
    weights = files_fingerprint(model_dir) if model_dir is not None and Path(model_dir).is_dir() \
        else weights_fingerprint(embedder)
    return _hash(weights, settings_fingerprint(model_cfg, embedder))


def files_fingerprint(folder: Path, extra: str = "") -> str:
    """Cheap identity of a saved model folder: names, sizes and modification times of its files."""
    folder = Path(folder)
    items = sorted(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    )
    return _hash(extra, json.dumps(items))


def builder_key(builder) -> dict:
    key = {
        "vocab": len(builder.tokenizer),
        "tokenizer": type(builder.tokenizer).__name__,
        "max_length": builder.max_length,
        "padding_side": builder.padding_side,
        "prefix": list(builder.prefix),
        "suffix": list(builder.suffix),
        "exclude_instruction": builder.exclude_instruction,
    }
    # Only when not the defaults, so the entries of `full` evaluations made before these settings still hit.
    if getattr(builder, "encoding", "full") != "full":
        key["encoding"] = builder.encoding
    if getattr(builder, "chunk", None) is not None:
        key["chunk"] = dataclasses.asdict(builder.chunk)
    if getattr(builder, "mask_tokens", 0):
        key["mask_tokens"] = [builder.mask_tokens, builder.mask_id]
    return key


class EmbeddingCache:
    """Embeddings of one model under `root/<model_key>/`, one .npy file per (settings, texts)."""

    def __init__(self, root: str | Path, model_key: str):
        self.dir = Path(root) / model_key
        self.hits = 0
        self.misses = 0

    def key(self, builder, texts: list[str], instruction: str, precision: str, kind: str = "") -> str:
        extra = {"kind": kind} if kind else {}
        settings = json.dumps({**builder_key(builder), "instruction": instruction, "precision": precision,
                               "version": VERSION, **extra}, sort_keys=True)
        texts_hash = hashlib.blake2b(digest_size=16)
        for t in texts:
            texts_hash.update(t.encode())
            texts_hash.update(b"\x00")
        return _hash(settings, texts_hash.hexdigest(), str(len(texts)))

    def get(self, key: str) -> np.ndarray | None:
        path = self.dir / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            return None
        return arr

    def put(self, key: str, emb: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{key}.npy"
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp.npy")
        np.save(tmp, emb, allow_pickle=False)
        os.replace(tmp, path)


def run_cache(run_dir: str | Path, embedder, model_cfg) -> EmbeddingCache:
    """The cache of a trained run: `<run>/embeddings/`, keyed by the run's saved model files and the settings
    it is evaluated with (an eval may override e.g. the attention direction of a run)."""
    run_dir = Path(run_dir)
    return EmbeddingCache(run_dir / "embeddings", model_key(embedder, model_cfg, run_dir / "model"))
