"""BEIR-format folders: any retrieval task on disk, and the format our own real tasks are built in.

    <folder>/corpus.jsonl      {"_id": ..., "title": ..., "text": ...}   one document per line
    <folder>/queries.jsonl     {"_id": ..., "text": ..., "metadata": {"depth": 0.3}}   (metadata optional)
    <folder>/qrels/test.tsv    query-id <TAB> corpus-id <TAB> score, with that header line

Documents are "title\\n\\ntext" when a title is given (BEIR's own convention
joins them too). Every query gets the length bucket of its relevant document
(study.tasks.base.length_bucket), so any folder yields score-vs-length rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from study.tasks.base import RetrievalTask, TaskUnavailable, real_split

REQUIRED = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
INSTRUCTION = "Given a query, retrieve the relevant document: "


def missing_files(folder: Path) -> list[str]:
    return [f for f in REQUIRED if not (folder / f).is_file()]


def check_folder(folder: Path, name: str) -> None:
    if not folder.is_dir():
        raise TaskUnavailable(f"task {name!r}: folder {str(folder)!r} does not exist (beir:<path> needs a BEIR-format "
                              f"folder with {', '.join(REQUIRED)})")
    missing = missing_files(folder)
    if missing:
        raise TaskUnavailable(f"task {name!r}: {str(folder)!r} is not a BEIR-format folder; missing {', '.join(missing)}")


def _read_jsonl(path: Path, required: tuple[str, ...] = ("_id", "text")) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskUnavailable(f"{path}:{n}: not a JSON object ({e.msg}): {line.strip()[:80]!r}") from None
            missing = [k for k in required if not isinstance(row, dict) or k not in row]
            if missing:
                raise TaskUnavailable(f"{path}:{n}: missing field(s) {', '.join(missing)} in {line.strip()[:80]!r}")
            rows.append(row)
    return rows


def read_beir(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]], dict[str, dict]]:
    """(corpus, queries, qrels, query metadata) of a BEIR folder."""
    corpus = {}
    for row in _read_jsonl(folder / "corpus.jsonl"):
        title, text = (row.get("title") or "").strip(), row.get("text") or ""
        corpus[str(row["_id"])] = f"{title}\n\n{text}" if title else text
    queries, meta = {}, {}
    for row in _read_jsonl(folder / "queries.jsonl"):
        queries[str(row["_id"])] = row["text"]
        meta[str(row["_id"])] = row.get("metadata") or {}
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise TaskUnavailable(f"{folder / 'qrels' / 'test.tsv'}: first line must be the header "
                                  f"'query-id<TAB>corpus-id<TAB>score' (got {header!r})")
        for row in reader:
            if row:
                try:
                    qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
                except (IndexError, ValueError):
                    raise TaskUnavailable(f"{folder / 'qrels' / 'test.tsv'}: line {reader.line_num} is not "
                                          f"'query-id<TAB>corpus-id<TAB>score': {row!r}") from None
    return corpus, queries, qrels, meta


def load_beir(folder: str | Path, name: str | None = None, instruction: str = INSTRUCTION,
              description: str = "") -> RetrievalTask:
    folder = Path(folder).expanduser()
    name = name or f"beir:{folder.name}"
    check_folder(folder, name)
    corpus, queries, qrels, meta = read_beir(folder)
    depth = {q: m["depth"] for q, m in meta.items() if m.get("depth") is not None}
    split = real_split(queries, corpus, qrels, depth)
    if not split.queries:
        raise TaskUnavailable(f"task {name!r}: no query in {folder} has a relevant document in its corpus")
    return RetrievalTask(name=name, query_instruction=instruction, splits=[split],
                         description=description or f"BEIR-format folder {folder}")


def write_beir(folder: Path, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
               metadata: dict[str, dict] | None = None) -> dict[str, str]:
    """Write a BEIR folder (sorted, so equal inputs give equal bytes); returns each file's sha256."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for did in sorted(corpus):
            fh.write(json.dumps({"_id": did, "title": "", "text": corpus[did]}, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid in sorted(queries):
            row = {"_id": qid, "text": queries[qid]}
            if metadata and metadata.get(qid):
                row["metadata"] = metadata[qid]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid in sorted(qrels):
            for did in sorted(qrels[qid]):
                fh.write(f"{qid}\t{did}\t{qrels[qid][did]}\n")
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in REQUIRED}
