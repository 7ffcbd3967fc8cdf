"""`pydocs`: real long documents with human-written queries, built offline from the Python 3.11 docs.

Source: the Debian package `python3.11-doc` (the HTML documentation of CPython
3.11; PSF-2.0 license), fetched once with `apt-get download python3.11-doc`
(`make setup` does it into .cache/debs/; `study build-task pydocs` too).

- Documents: every documentation page that has a reST source (about 500:
  library reference, language reference, tutorial, HOWTOs, What's New, C API),
  as the plain text a reader sees (the page body; navigation, table-of-contents
  blocks and permalink marks removed). They range from under a hundred to tens
  of thousands of words: one candidate pool holds them all.
- Queries: the one-line description each module's heading gives it, written by
  the documentation's authors (":mod:`json` --- JSON encoder and decoder" gives
  the query "JSON encoder and decoder"), relevant to the page that holds the
  heading. The query's own line is replaced by the bare module name, so the
  page keeps its identity but not the query's words there. Queries still found
  verbatim in their page, and descriptions shared by several modules, are
  dropped (the manifest counts them).
- Length: each query's bucket is its page's length in words / 0.75 rounded up to
  a power of two (study.tasks.base.length_bucket; the synthetic tasks' unit).
- Depth: where the heading sits in the page (0..1) for modules documented in a
  section of a longer page; null for a page-level heading (the whole page is the
  answer, so a position would mean nothing).

`pydocs-index` (same pages, same build) is queried by the documentation's
back-of-book index terms instead (genindex: "garbage collection", "type alias"),
relevant to the pages they index (at most 3). Only top-level terms made of
words are kept: identifiers, options, environment variables and symbols are
left out (they match too easily). Depth is the indexed anchor's position in the
page when a term indexes one place. Index terms are the page's own vocabulary,
so they usually do occur in it: this task is the lexical, depth-resolved one.

The build is a pure function of the .deb: files are written sorted, and the
manifest records the package version, license, sha256 of the .deb and of each
output file, and the counts. Training text (GCIDE) shares no word 8-gram with
it (tests check this).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from study.paths import cache_dir, file_lock
from study.tasks.base import TaskUnavailable, count_words, length_bucket, normalize
from study.tasks.beir import load_beir, write_beir

log = logging.getLogger(__name__)

PACKAGE = "python3.11-doc"
LICENSE = "PSF-2.0 (Python Software Foundation License; the documentation of CPython 3.11)"
RECIPE_VERSION = 2  # bump when the recipe changes: cached builds are keyed by it
HTML_ROOT = "usr/share/doc/python3.11/html/"
MIN_DOC_WORDS = 50  # pages shorter than this are navigation stubs
INSTRUCTION = "Given a one-line description of a Python module, retrieve its documentation page: "
INDEX_INSTRUCTION = "Given a term from the index of the Python documentation, retrieve a page it indexes: "
REPO_ROOT = Path(__file__).resolve().parents[2]

HOW_TO_BUILD = (
    "the pydocs task is built from the Debian package python3.11-doc, which was not found. Get it with "
    "`make setup` (downloads it into .cache/debs/), or `study build-task pydocs` (runs "
    "`apt-get download python3.11-doc`), or put the .deb in a folder named by STUDY_DEBS"
)


# ------------------------------------------------------------------ the source package


def deb_dirs() -> list[Path]:
    dirs = [Path(os.environ["STUDY_DEBS"])] if os.environ.get("STUDY_DEBS") else []
    return dirs + [REPO_ROOT / ".cache" / "debs", cache_dir() / "debs"]


def find_deb() -> Path | None:
    for d in deb_dirs():
        hits = sorted(d.glob(f"{PACKAGE}_*_all.deb")) if d.is_dir() else []
        if hits:
            return hits[-1]
    return None


def download_deb(dest: Path | None = None) -> Path:
    """`apt-get download python3.11-doc` into dest (no root needed); the one step that needs a network."""
    dest = dest or REPO_ROOT / ".cache" / "debs"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=dest, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise TaskUnavailable(f"{HOW_TO_BUILD} (apt-get is not available on this machine)") from None
    except subprocess.CalledProcessError as e:
        raise TaskUnavailable(f"apt-get download {PACKAGE} failed: {e.stderr.strip()[-400:]} (on a fresh machine run "
                              f"`apt-get update` first, as root). {HOW_TO_BUILD}") from None
    deb = find_deb()
    if deb is None:
        raise TaskUnavailable(HOW_TO_BUILD)
    return deb


def _ar_members(data: bytes) -> dict[str, bytes]:
    """Members of a .deb (an `ar` archive), so extraction needs neither dpkg nor root."""
    if data[:8] != b"!<arch>\n":
        raise TaskUnavailable("not a Debian package (no ar header)")
    out, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        out[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def _tar(members: dict[str, bytes], stem: str) -> tarfile.TarFile:
    name = next((n for n in members if n.startswith(stem)), None)
    if name is None:
        raise TaskUnavailable(f"Debian package has no {stem}.*")
    return tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*")


def read_deb(deb: Path) -> tuple[str, dict[str, str], set[str]]:
    """(package version, {page path: html} for every page, the set of pages with a reST source)."""
    members = _ar_members(deb.read_bytes())
    control = _tar(members, "control.tar").extractfile("./control").read().decode()
    version = re.search(r"^Version:\s*(\S+)", control, re.M).group(1)
    pages, sources = {}, set()
    with _tar(members, "data.tar") as tar:
        for m in tar.getmembers():
            path = m.name.removeprefix("./")
            if not path.startswith(HTML_ROOT) or not m.isfile():
                continue
            rel = path[len(HTML_ROOT):]
            if rel.startswith("_sources/") and rel.endswith(".rst.txt"):
                sources.add(rel[len("_sources/") : -len(".rst.txt")])
            elif rel.endswith(".html"):
                pages[rel[: -len(".html")]] = tar.extractfile(m).read().decode("utf-8")
    return version, pages, sources


# ------------------------------------------------------------------ html -> text


_BLOCK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "tr", "br", "hr",
          "table", "blockquote", "dl", "ul", "ol", "figure", "caption", "th"}
_SKIP_CLASSES = {"toctree-wrapper", "headerlink", "sphinxsidebar", "related", "footer"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "base", "source"}
_HEADING = re.compile(r"^([A-Za-z_][\w.]*)\s+—\s+(.+)$")


class _PageText(HTMLParser):
    """The text of a Sphinx page body, one block per line; headings are marked so they can be found."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.headings: list[int] = []  # indices into lines
        self.anchors: dict[str, int] = {}  # element id -> index of the line it starts in
        self._buf: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, starts a skipped region)
        self._in_body = 0  # depth of tags inside <div class="body">
        self._skip = 0
        self._pre = 0
        self._heading = False

    def _flush(self):
        text = "".join(self._buf)
        self._buf = []
        if self._pre:
            lines = [ln.rstrip() for ln in text.split("\n")]
        else:
            lines = [" ".join(text.split())]
        for ln in lines:
            if ln.strip():
                if self._heading:
                    self.headings.append(len(self.lines))
                self.lines.append(ln)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if not self._in_body:
            if tag == "div" and "body" in classes and attrs.get("role") == "main":
                self._in_body = 1
            return
        if tag in _VOID:
            if tag in _BLOCK and not self._skip:
                self._flush()
            return
        self._in_body += 1
        skip = bool(classes & _SKIP_CLASSES) or tag in ("script", "style")
        self._stack.append((tag, skip))
        if skip:
            self._skip += 1
        if self._skip:
            return
        if tag in _BLOCK:
            self._flush()
        if attrs.get("id"):
            self.anchors.setdefault(attrs["id"], len(self.lines))
        if tag == "pre":
            self._pre += 1
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = True

    def handle_endtag(self, tag):
        if not self._in_body or tag in _VOID:
            return
        self._in_body -= 1
        if not self._stack:
            return
        open_tag, skip = self._stack.pop()
        if skip:
            self._skip -= 1
            return
        if self._skip:
            return
        if open_tag in _BLOCK:
            self._flush()
        if open_tag == "pre":
            self._pre -= 1
        if open_tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = False

    def handle_data(self, data):
        if self._in_body and not self._skip:
            self._buf.append(data)


def page_text(html: str) -> tuple[list[str], list[int], dict[str, int]]:
    parser = _PageText()
    parser.feed(html)
    parser.close()
    parser._flush()
    return parser.lines, parser.headings, parser.anchors


class _IndexEntries(HTMLParser):
    """Top-level entries of Sphinx's genindex-all page: (term, [page#anchor, ...])."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.entries: list[tuple[str, list[str]]] = []
        self._ul = 0  # <ul> depth inside the index table
        self._in_table = False
        self._current: tuple[list[str], list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "indextable" in (attrs.get("class") or ""):
            self._in_table = True
        if not self._in_table:
            return
        if tag == "ul":
            self._ul += 1
            self._end_entry()  # sub-entries are not part of their parent's term
        elif tag == "li" and self._ul == 1:
            self._current = ([], [])
        elif tag == "a" and self._current is not None and attrs.get("href"):
            self._current[1].append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "ul" and self._in_table:
            self._ul -= 1
        elif tag == "li" and self._ul == 1:
            self._end_entry()

    def handle_data(self, data):
        if self._current is not None:
            self._current[0].append(data)

    def _end_entry(self):
        if self._current is not None:
            text = re.sub(r"(,\s*)?\[\d+\]", "", "".join(self._current[0]))
            self.entries.append((" ".join(text.split()).strip(" ,"), self._current[1]))
        self._current = None


# An index term made of words only: no call parentheses, dots, underscores, digits, options or
# ALL-CAPS names, so identifiers ("json.dumps() (in module json)", "PYTHONPATH", "-m") are left out.
_TERM = re.compile(r"^[A-Za-z][a-z'-]*(?: [A-Za-z][a-z'-]*)+$")
MAX_INDEX_PAGES = 3  # a term indexed on more pages is too generic to have a right answer


def index_entries(html: str) -> list[tuple[str, list[str]]]:
    parser = _IndexEntries()
    parser.feed(html)
    parser.close()
    return parser.entries


# ------------------------------------------------------------------ the task


def build_pydocs(deb: Path, out: Path) -> dict:
    """Write the BEIR folder + manifest.json for `deb` into `out`; returns the manifest."""

    version, pages, sources = read_deb(deb)
    corpus, candidates = {}, []  # candidates: (query text, doc id, depth)
    anchor_depth: dict[str, dict[str, float]] = {}
    for path in sorted(sources):
        if path not in pages:
            continue
        lines, headings, anchors = page_text(pages[path])
        for i in headings:
            m = _HEADING.match(lines[i])
            if m:
                module, description = m.group(1), m.group(2).strip()
                # Keep the page's identity (the module's name), drop the query's words.
                lines[i] = module
                top = i == headings[0] and i <= 1
                offset = sum(len(ln) + 1 for ln in lines[:i])
                candidates.append((description, path, None if top else offset))
        text = "\n".join(lines)
        if count_words(text) >= MIN_DOC_WORDS:
            corpus[path] = text
            starts = np.cumsum([0] + [len(ln) + 1 for ln in lines])
            anchor_depth[path] = {a: float(starts[i]) / max(len(text), 1) for a, i in anchors.items()}
    counts = {"pages": len(pages), "pages_with_source": len(sources), "documents": len(corpus),
              "module_headings": len(candidates), "dropped_short_page": 0, "dropped_shared_description": 0,
              "dropped_verbatim_in_page": 0}
    by_text: dict[str, list] = {}
    for c in candidates:
        by_text.setdefault(normalize(c[0]), []).append(c)
    queries, qrels, meta = {}, {}, {}
    for key, group in sorted(by_text.items()):
        if len({c[1] for c in group}) > 1:
            counts["dropped_shared_description"] += len(group)
            continue
        description, path, offset = group[0]
        if path not in corpus:
            counts["dropped_short_page"] += len(group)
            continue
        if key in normalize(corpus[path]):
            counts["dropped_verbatim_in_page"] += len(group)
            continue
        qid = "q-" + hashlib.sha1(f"{path}\0{key}".encode()).hexdigest()[:10]
        queries[qid], qrels[qid] = description, {path: 1}
        depth = None if offset is None else round(offset / max(len(corpus[path]), 1), 4)
        meta[qid] = {"depth": depth, "doc_words": count_words(corpus[path]), "page": path}
    counts["queries"] = len(queries)
    hashes = write_beir(out, corpus, queries, qrels, meta)
    index = index_task(pages.get("genindex-all", ""), corpus, anchor_depth)
    hashes.update({f"index/{k}": v for k, v in write_beir(out / "index", corpus, *index[:3]).items()})
    doc_words = sorted(count_words(t) for t in corpus.values())
    buckets: dict[int, int] = {}
    for m in meta.values():
        buckets[length_bucket(m["doc_words"])] = buckets.get(length_bucket(m["doc_words"]), 0) + 1
    manifest = {
        "task": "pydocs",
        "recipe_version": RECIPE_VERSION,
        "source": {"package": PACKAGE, "version": version, "file": deb.name, "license": LICENSE,
                   "sha256": hashlib.sha256(deb.read_bytes()).hexdigest(),
                   "how": f"apt-get download {PACKAGE}; pages under /{HTML_ROOT}"},
        "counts": counts,
        "document_words": {"min": doc_words[0], "median": doc_words[len(doc_words) // 2], "max": doc_words[-1],
                           "total": sum(doc_words)},
        "queries_per_length_bucket": {str(k): v for k, v in sorted(buckets.items())},
        "length_unit": "words / 0.75, rounded up to a power of two (min 256)",
        "files": hashes,
        "index_task": index[3],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def index_task(genindex_html: str, corpus: dict[str, str], anchor_depth: dict[str, dict[str, float]]):
    """pydocs-index: back-of-book index terms (multi-word, not identifiers) -> the pages they index.

    Depth is the indexed anchor's position when the term points at one place; null otherwise."""
    queries, qrels, meta = {}, {}, {}
    counts = {"index_entries": 0, "dropped_identifier_or_symbol": 0, "dropped_generic": 0, "dropped_no_page": 0,
              "dropped_duplicate": 0}
    seen = set()
    for term, hrefs in index_entries(genindex_html):
        counts["index_entries"] += 1
        if not _TERM.match(term):
            counts["dropped_identifier_or_symbol"] += 1
            continue
        targets = [(h.split("#")[0].removesuffix(".html"), h.partition("#")[2]) for h in hrefs]
        pages = sorted({p for p, _ in targets if p in corpus})
        if not pages:
            counts["dropped_no_page"] += 1
            continue
        if len(pages) > MAX_INDEX_PAGES:
            counts["dropped_generic"] += 1
            continue
        if normalize(term) in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(normalize(term))
        qid = "i-" + hashlib.sha1(term.encode()).hexdigest()[:10]
        queries[qid], qrels[qid] = term, {p: 1 for p in pages}
        depth = anchor_depth.get(targets[0][0], {}).get(targets[0][1]) if len(targets) == 1 else None
        meta[qid] = {"depth": None if depth is None else round(depth, 4), "pages": pages}
    counts["queries"] = len(queries)
    counts["queries_with_depth"] = sum(m["depth"] is not None for m in meta.values())
    return queries, qrels, meta, counts


def _deb_sha(deb: Path) -> str:
    return hashlib.sha256(deb.read_bytes()).hexdigest()


def pydocs_dir(deb: Path | None = None) -> Path:
    """The built task folder (built on first use, cached per .deb and recipe, under a file lock)."""
    deb = deb or find_deb()
    if deb is None:
        raise TaskUnavailable(HOW_TO_BUILD)
    out = cache_dir() / "tasks" / f"pydocs-v{RECIPE_VERSION}-{_deb_sha(deb)[:16]}"
    with file_lock(out.with_suffix(".lock")):
        if not (out / "manifest.json").is_file():
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            log.info("building the pydocs task from %s -> %s", deb.name, out)
            build_pydocs(deb, tmp)
            if out.exists():  # a folder without a manifest is an interrupted build: replace it
                shutil.rmtree(out)
            os.replace(tmp, out)
    return out


@functools.lru_cache(maxsize=2)
def _load(folder: str):

    return load_beir(folder, name="pydocs", instruction=INSTRUCTION,
                     description="Python 3.11 documentation pages; queries: module one-line descriptions")


def pydocs(*_args, **_kwargs):
    """The pydocs task (the arguments of the synthetic builders are ignored: the task is fixed)."""
    return _load(str(pydocs_dir()))


@functools.lru_cache(maxsize=2)
def _load_index(folder: str):

    return load_beir(folder, name="pydocs-index", instruction=INDEX_INSTRUCTION,
                     description="Python 3.11 documentation pages; queries: back-of-book index terms")


def pydocs_index(*_args, **_kwargs):
    """pydocs-index: the same pages, queried by their index terms (same build and cache as pydocs)."""
    return _load_index(str(pydocs_dir() / "index"))
