"""A byte-level BPE tokenizer trained offline on the GCIDE dictionary text.

Byte-level, so any text (Bible verses, Python docs, passkeys) tokenizes without
unknown tokens. Cached under the study cache, keyed by its settings.
"""

from __future__ import annotations

import json
import shutil

from study.paths import cache_dir, file_lock
from study.sources import gcide_entries, gcide_provenance

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>", "unk_token": "<unk>"}
TOKENIZER_VERSION = 1  # bump when the recipe changes so caches rebuild


def tiny_tokenizer(vocab_size: int = 8192):
    """The shared tokenizer of the tiny backbones (built once, then loaded)."""
    from transformers import AutoTokenizer

    path = cache_dir() / "tokenizers" / f"gcide-bpe{vocab_size}-v{TOKENIZER_VERSION}"
    with file_lock(path.with_suffix(".lock")):
        if not (path / "tokenizer.json").exists():
            _train(path, vocab_size)
    return AutoTokenizer.from_pretrained(path)


def _train(path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast


    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((e.text for e in gcide_entries()), trainer)
    # "<s> text </s>": a start token (CLS-like for encoders, attention sink for
    # decoders) and an end token (what last-token pooling reads).
    bos, eos = SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))]
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=1 << 20, **SPECIAL_TOKENS)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)
    (tmp / "manifest.json").write_text(json.dumps({"trained_on": gcide_provenance(), "vocab_size": vocab_size}, indent=2))
    tmp.rename(path)


# Tokenizer classes that mean "use tokenizer.json exactly as saved" (our byte-level BPE).
GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(source: str, trust_remote_code: bool = False):
    """The tokenizer of a local folder or hub id, tokenizing exactly as it did when saved.

    AutoTokenizer picks the class from config.json's model type, so a generic tokenizer.json saved
    next to a Qwen2 config would come back as Qwen2Tokenizer, whose own pre-tokenizer splits digits
    and punctuation differently: a reloaded tiny model (a trained run, tiny-ar, tiny-diffusion)
    would then see other tokens than in training. Generic tokenizers are loaded as they are.
    """
    from pathlib import Path

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(source).expanduser() / "tokenizer_config.json"
    if config_file.is_file():
        if json.loads(config_file.read_text()).get("tokenizer_class") in GENERIC_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(str(Path(source).expanduser()))
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
