"""Export a trained run so it can be used anywhere: a sentence-transformers folder.

    study export runs/<run> --format sentence-transformers out/

The folder holds Transformer -> Pooling -> Normalize, and `SentenceTransformer(out)` reproduces the
project's own embeddings (checked at export time: cosine >= 0.9999 on texts of several lengths,
batched together so padding is exercised). What has to carry over, and how:
  * attention direction: it lives in the backbone's config (`is_causal` for decoders, `is_decoder` for
    BERT-style encoders; see study/backbones/attention.py), which `save_pretrained` writes;
  * LoRA: adapters are merged into the base weights first;
  * padding side: saved in the tokenizer config (sentence-transformers pads where the tokenizer says);
  * special tokens: our InputBuilder wraps text in the tokenizer's own special tokens and, for decoders,
    appends EOS (what last-token pooling reads); when the tokenizer does not add that EOS itself, the
    exported tokenizer gets a post-processor that does, so both tokenize to the same ids;
  * pooling: mean -> mean, last_token -> lasttoken, first_token -> cls, weighted_mean -> weightedmean.
Options sentence-transformers cannot express (latent_attention pooling, exclude_instruction) are
refused before anything is loaded. Query instructions are not baked in: pass them as `prompt=`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from study.config import load_config
from study.encode import encode
from study.errors import ConfigError
from study.inference import eval_builder, load_trained

log = logging.getLogger(__name__)

FORMATS = ("sentence-transformers",)
ST_POOLING = {"mean": "mean", "last_token": "lasttoken", "first_token": "cls", "weighted_mean": "weightedmean"}
MIN_COSINE = 0.9999
CHECK_TEXTS = [
    "A short text.",
    "Embeddings of long documents depend on how far attention reaches, and in which direction. " * 6,
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 20,
    "Numbers 12345 and 3.14, punctuation; (brackets), CAPITALS and  double  spaces.",
]


class ExportMismatch(RuntimeError):
    """The exported model does not reproduce the project's embeddings."""


def check_exportable(mcfg, fmt: str) -> None:
    """Refuse formats and options the target cannot express, before any model is loaded."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; choose one of: {', '.join(FORMATS)}")
    if getattr(mcfg, "encoding", "full") != "full":
        raise ConfigError(
            f"model.encoding={mcfg.encoding!r} cannot be expressed as a sentence-transformers model (it changes how "
            "texts are laid out or split, outside the network); exportable encodings: full")
    if mcfg.pooling == "mask_tokens":
        raise ConfigError(
            "model.pooling='mask_tokens' cannot be expressed as a sentence-transformers Pooling module (it appends "
            f"tokens to every text); exportable poolings: {', '.join(ST_POOLING)}")
    if mcfg.pooling not in ST_POOLING:
        raise ConfigError(
            f"model.pooling={mcfg.pooling!r} cannot be expressed as a sentence-transformers Pooling module "
            f"(it has trained weights of its own); exportable poolings: {', '.join(ST_POOLING)}"
        )
    if mcfg.exclude_instruction:
        raise ConfigError(
            "model.exclude_instruction=true cannot be exported to sentence-transformers exactly (its "
            "include_prompt=False tokenizes the prompt together with the text); re-train with "
            "model.exclude_instruction=false or use the run folder directly"
        )


def export(run_dir: str | Path, out: str | Path, fmt: str = "sentence-transformers", verify: bool = True) -> dict:
    """Write `out` (must not exist or be empty); returns what was written and the verification cosine."""

    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported; choose one of: {', '.join(FORMATS)}")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"run folder {str(run_dir)!r} has no config.yaml; is it a run folder?")
    cfg = load_config(run_dir / "config.yaml", validate_backbone=False)
    check_exportable(cfg.model, fmt)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output folder {str(out)!r} exists and is not empty; choose a new folder")


    embedder, backbone, cfg = load_trained(run_dir)
    builder = eval_builder(cfg, backbone)
    tmp = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = _write_sentence_transformers(embedder, backbone, builder, tmp)
        info.update(run=str(run_dir), attention=cfg.model.attention, pooling=cfg.model.pooling,
                    backbone=cfg.model.backbone)
        if verify:
            info["min_cosine"] = verify_export(embedder, builder, tmp)
            if info["min_cosine"] < MIN_COSINE:
                raise ExportMismatch(
                    f"the exported model's embeddings differ from the run's (min cosine {info['min_cosine']:.6f} "
                    f"< {MIN_COSINE}); nothing was written to {out}"
                )
        (tmp / "study_export.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _write_sentence_transformers(embedder, backbone, builder, folder: Path) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    model = embedder.backbone
    merged = False
    if hasattr(model, "merge_and_unload"):  # a PEFT (LoRA) wrapper
        import copy

        model, merged = copy.deepcopy(model).merge_and_unload(), True
    hf_dir = folder / "hf"
    model.save_pretrained(hf_dir)
    tokenizer = _matching_tokenizer(backbone.tokenizer, builder)
    tokenizer.save_pretrained(hf_dir)
    tokenizer_class = json.loads((hf_dir / "tokenizer_config.json").read_text()).get("tokenizer_class")
    _fix_tokenizer_config(hf_dir, builder.padding_side, tokenizer_class)
    transformer = Transformer(str(hf_dir), max_seq_length=builder.max_length)
    processor_kwargs = {}
    if not _same_ids(transformer.tokenizer, builder):
        # transformers loads some model types' tokenizers as their own class whatever tokenizer_config
        # says (qwen2 -> Qwen2Tokenizer, with its own pre-tokenizer); a generic tokenizer.json (our tiny
        # models) must then be loaded through a model type whose tokenizer is the generic backend.
        processor_kwargs = {"tokenizer_type": _generic_tokenizer_type()}
        transformer = Transformer(str(hf_dir), max_seq_length=builder.max_length, processor_kwargs=processor_kwargs)
    pooling = Pooling(backbone.hidden_size, pooling_mode=ST_POOLING[embedder.pooler.mode])
    st = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    st.save(str(folder))
    shutil.rmtree(hf_dir)
    _fix_tokenizer_config(folder, builder.padding_side, tokenizer_class)
    if processor_kwargs:  # sentence-transformers does not save them; its loader reads them from here
        path = folder / "sentence_bert_config.json"
        config = json.loads(path.read_text())
        config["processor_kwargs"] = {**config.get("processor_kwargs", {}), **processor_kwargs}
        path.write_text(json.dumps(config, indent=2))
    return {"format": "sentence-transformers", "padding_side": builder.padding_side,
            "max_seq_length": builder.max_length, "st_pooling": ST_POOLING[embedder.pooler.mode],
            "lora_merged": merged}


def _same_ids(tokenizer, builder, texts: list[str] | None = None) -> bool:
    for text in texts or CHECK_TEXTS:
        mine = builder.sequence(builder.tokenize([text])[0])[0]
        if list(tokenizer(text, truncation=True, max_length=builder.max_length)["input_ids"]) != mine:
            return False
    return True


def _generic_tokenizer_type() -> str:
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    return next(k for k, v in TOKENIZER_MAPPING_NAMES.items() if v == "TokenizersBackend" and k.isalpha() and k.islower())


def _fix_tokenizer_config(folder: Path, side: str, tokenizer_class: str | None) -> None:
    """Pin what transformers would otherwise re-derive on load.

    padding_side is written only when it was a constructor argument; and sentence-transformers re-saves
    the tokenizer under the class the model type suggests (e.g. Qwen2Tokenizer, whose pre-tokenizer
    splits digits differently from our generic tiny tokenizer), so the original class is written back.
    """
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["padding_side"] = side
    if tokenizer_class:
        config["tokenizer_class"] = tokenizer_class
    path.write_text(json.dumps(config, indent=2))


def _matching_tokenizer(tokenizer, builder):
    """A copy of the tokenizer that pads on the run's side and adds exactly the builder's special tokens."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.padding_side = builder.padding_side
    plain = tok("x", add_special_tokens=False)["input_ids"]
    wanted = list(builder.prefix) + plain + list(builder.suffix)
    if tok("x")["input_ids"] != wanted:
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(
                "this backbone's tokenizer is not a fast tokenizer, so the EOS token the run appended cannot be "
                "added by the exported tokenizer; train with model.append_eos=false to export"
            )
        from tokenizers import processors

        ids = list(builder.prefix) + list(builder.suffix)
        names = tok.convert_ids_to_tokens(ids)
        pre = tok.convert_ids_to_tokens(list(builder.prefix))
        post = tok.convert_ids_to_tokens(list(builder.suffix))
        backend.post_processor = processors.TemplateProcessing(
            single=" ".join([*pre, "$A", *post]), special_tokens=sorted(set(zip(names, ids)))
        )
        # Slow-path flags some tokenizers use to rebuild their post-processor on load.
        for flag, value in (("add_bos_token", bool(pre)), ("add_eos_token", bool(post))):
            if hasattr(tok, flag):
                try:
                    setattr(tok, flag, value)
                except (AttributeError, ValueError):
                    pass
    return tok


def verify_export(embedder, builder, folder: Path, texts: list[str] | None = None) -> float:
    """Min cosine between the run's fp32 embeddings and the exported model's, texts batched together."""
    import numpy as np
    from sentence_transformers import SentenceTransformer


    texts = texts or CHECK_TEXTS
    ours = encode(embedder, builder, texts, precision="32-true")
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    if not _same_ids(st.tokenizer, builder, texts):
        raise ExportMismatch(f"the exported tokenizer ({type(st.tokenizer).__name__}) gives other token ids than "
                             "the run's; nothing was written")
    theirs = st.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True)
    return float(np.min(np.sum(ours * theirs, axis=1)))
