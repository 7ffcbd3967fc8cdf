"""Where pretrained backbones live, and the names that point at them.

A build is a folder `cache_dir()/backbones/<kind>-<cache key>/` (kind: tiny-ar,
tiny-diffusion or tiny-ar-mntp; the key hashes the training settings and the
corpus manifest) holding the model (`save_pretrained`, loadable by AutoModel and
AutoModelForCausalLM), the tokenizer, `pretrain_config.yaml`, `lineage.json`,
`results.parquet` (loss curves), the offline W&B run and `manifest.json` (written
last: its presence marks a finished build).

Names are pointers kept in `backbones/index.json`: `study pretrain` (re)points its
name at the build it made or reused. Resolving a name only reads this file, so
config validation stays instant and never trains anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from study.paths import cache_dir, file_lock

FINISHED = "manifest.json"


def backbones_dir() -> Path:
    return cache_dir() / "backbones"


def _index_path() -> Path:
    return backbones_dir() / "index.json"


def registered() -> dict[str, dict]:
    """{name: {"folder": ..., "cache_key": ...}} for every pretrained name."""
    path = _index_path()
    return json.loads(path.read_text()) if path.exists() else {}


def register(name: str, folder: Path, cache_key: str) -> None:
    path = _index_path()
    with file_lock(path.with_suffix(".lock")):
        index = registered()
        index[name] = {"folder": folder.name, "cache_key": cache_key}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
        os.replace(tmp, path)


def pretrained_folder(name: str) -> Path | None:
    """The finished build a name points at, or None."""
    entry = registered().get(name)
    if entry is None:
        return None
    folder = backbones_dir() / entry["folder"]
    return folder if (folder / FINISHED).exists() else None


def read_lineage(folder: str | Path) -> dict | None:
    """The lineage of a pretrained folder (None for anything else): what a fine-tuning run records."""
    path = Path(folder) / "lineage.json"
    return json.loads(path.read_text()) if path.is_file() else None
