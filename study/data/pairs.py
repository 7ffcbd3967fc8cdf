"""Training pairs (query, positive, hard negatives) as a `datasets.DatasetDict`.

The default set, "gcide-pairs", is built offline from the GCIDE dictionary:
a document is a run of consecutive dictionary entries (a "page" of 60-320 words);
a query either asks what one headword on the page means or quotes one of its
definitions (inverse-cloze style); the hard negatives are the neighbouring pages,
which share the alphabetical neighbourhood. Answers sit at every depth of the
page, which is the skill the long-context tasks test. Entries sharing any word
8-gram with the evaluation text (King James Bible, passkey filler) are dropped,
so training and evaluation text are disjoint (tests check this).

Any other set with columns `query`, `positive` and optionally `negatives`
(list of str) and `instruction` can be given as `data.train`: a `datasets`
folder, a .jsonl/.json/.parquet file, or a hub dataset id; so can the paper's
training sets in their own formats (study/data/recipes.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np

from study.data.recipes import is_echo_folder, load_echo_folder, normalise
from study.errors import ConfigError
from study.paths import cache_dir, file_lock
from study.sources import gcide_entries, gcide_provenance, kjv_provenance, kjv_verses, word_ngrams
from study.tasks.synthetic import PASSKEY_FILLER

PAIRS_VERSION = 1  # bump when the recipe changes so caches rebuild
QUESTION_INSTRUCTION = "Given a question, retrieve the document that contains the answer: "
QUOTE_INSTRUCTION = "Given a sentence, retrieve the document that contains it: "


def eval_text_ngrams(n: int = 8) -> set[int]:

    grams: set[int] = set()
    for verse_block in range(0, len(kjv_verses()), 50):
        grams |= word_ngrams(" ".join(kjv_verses()[verse_block : verse_block + 51]), n)
    grams |= word_ngrams(" ".join(PASSKEY_FILLER * 4), n)
    return grams


def _pages(entries, rng, min_words: int, max_words: int) -> list[list[int]]:
    pages, current, count = [], [], 0
    target = rng.integers(min_words, max_words + 1)
    for i, e in enumerate(entries):
        current.append(i)
        count += len(e.text.split())
        if count >= target:
            pages.append(current)
            current, count, target = [], 0, rng.integers(min_words, max_words + 1)
    return pages


def _first_sentence(text: str) -> str:
    body = text.split(": ", 1)[-1]
    return re.split(r"(?<=\.)\s", body, maxsplit=1)[0].strip()


def build_gcide_pairs(num_pairs: int, num_val_pairs: int, hard_negatives: int, min_words: int, max_words: int,
                      seed: int = 0):
    import datasets


    banned = eval_text_ngrams()
    entries = [e for e in gcide_entries() if len(e.text.split()) <= max_words and not (word_ngrams(e.text) & banned)]
    rng = np.random.default_rng(seed)
    pages = _pages(entries, rng, min_words, max_words)
    texts = [" ".join(entries[i].text for i in page) for page in pages]
    # Validation pages are a random, disjoint block of pages.
    order = rng.permutation(len(pages))
    n_val_pages = max(1, min(len(pages) // 10, num_val_pairs * 2))
    split_pages = {"validation": order[:n_val_pages], "train": order[n_val_pages:]}
    out = {}
    for split, n in (("train", num_pairs), ("validation", num_val_pairs)):
        rows = {"query": [], "instruction": [], "positive": [], "negatives": []}
        allowed = split_pages[split]
        allowed_set = set(allowed.tolist())
        for p in rng.choice(allowed, size=n, replace=n > len(allowed)):
            entry = entries[pages[p][rng.integers(len(pages[p]))]]
            if rng.random() < 0.5:
                rows["query"].append(f"What does the word '{entry.word}' mean?")
                rows["instruction"].append(QUESTION_INSTRUCTION)
            else:
                rows["query"].append(_first_sentence(entry.text))
                rows["instruction"].append(QUOTE_INSTRUCTION)
            rows["positive"].append(texts[p])
            neighbours = [q for d in range(1, 4 * hard_negatives + 4) for q in (p + d, p - d) if q in allowed_set]
            rows["negatives"].append([texts[q] for q in neighbours[:hard_negatives]])
        out[split] = datasets.Dataset.from_dict(rows)
    return datasets.DatasetDict(out)


def load_pairs(dcfg):
    """The training set named by `data.*` config keys, as DatasetDict(train, validation)."""
    if dcfg.train == "gcide-pairs":
        return _cached_gcide_pairs(dcfg)
    return _load_external(dcfg)


def _cached_gcide_pairs(dcfg):
    import datasets


    params = dict(
        num_pairs=dcfg.num_pairs, num_val_pairs=max(dcfg.num_val_pairs, 1), hard_negatives=dcfg.hard_negatives,
        min_words=dcfg.doc_min_words, max_words=dcfg.doc_max_words, seed=0,
    )
    key = hashlib.sha256(json.dumps([params, PAIRS_VERSION], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "pairs" / f"gcide-{key}"
    with file_lock(path.with_suffix(".lock")):
        if not (path / "manifest.json").exists():
            ds = build_gcide_pairs(**params)
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            ds.save_to_disk(str(tmp))
            manifest = {"recipe": params, "version": PAIRS_VERSION, "source": gcide_provenance(),
                        "disjoint_from": kjv_provenance(), "rows": {k: len(v) for k, v in ds.items()}}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
            tmp.rename(path)
    return datasets.load_from_disk(str(path))


def _load_external(dcfg):
    import datasets


    src = dcfg.train
    path = Path(src).expanduser()
    quiet = logging.getLogger("datasets")  # a file it cannot parse is logged with a traceback; we say it once
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        if is_echo_folder(path):
            ds = load_echo_folder(path)
        elif path.is_dir():
            ds = datasets.load_from_disk(str(path))
        elif path.suffix in (".jsonl", ".json", ".parquet") and path.exists():
            ds = datasets.load_dataset("json" if path.suffix != ".parquet" else "parquet", data_files=str(path))
        else:
            ds = datasets.load_dataset(src)
    except Exception as e:  # noqa: BLE001 - re-raised with the value named
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"data.train={src!r} could not be loaded: {first}") from None
    finally:
        quiet.setLevel(level)
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    ds = normalise(ds, src)  # the paper's formats (E5, ReasonAug, MS MARCO with instructions) -> our columns
    if "validation" not in ds:
        parts = ds["train"].train_test_split(test_size=min(dcfg.num_val_pairs, len(ds["train"]) // 5) or 1, seed=0)
        ds = datasets.DatasetDict({"train": parts["train"], "validation": parts["test"]})
    return ds
