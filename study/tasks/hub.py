"""Hub-backed tasks: `longembed:<config>` (hub dataset dwzhu/LongEmbed) and `mteb:<TaskName>`.

Both need the data downloaded once (network, or a filled HF cache under
HF_HOME); offline they fail with a TaskUnavailable that says what to download
where. `longembed:<folder>` reads the same data from a local folder instead:
either a `DatasetDict.save_to_disk` folder or files named corpus / queries /
qrels (.jsonl, .json or .parquet), with LongEmbed's columns:

    corpus   doc_id, text[, context_length]
    queries  qid, text[, context_length]
    qrels    qid, doc_id[, context_length]

Configs with `context_length` (passkey, needle) give one split per length, as
LongEmbed scores them; the others give one pool with per-query length buckets.
mteb is imported lazily: it is only needed for `mteb:` names.
"""

from __future__ import annotations

from pathlib import Path

from study.tasks.base import RetrievalTask, Split, TaskUnavailable, real_split

LONGEMBED_REPO = "dwzhu/LongEmbed"
LONGEMBED_CONFIGS = ("narrativeqa", "qmsum", "2wikimqa", "summ_screen_fd", "passkey", "needle")
LONGEMBED_SPLITS = ("corpus", "queries", "qrels")
# LongEmbed's query instructions are per task in its code; one neutral instruction keeps runs comparable.
INSTRUCTION = "Given a query, retrieve the document that answers it: "


LOCAL_LONGEMBED = (
    f"download it (`huggingface-cli download {LONGEMBED_REPO} --repo-type dataset --local-dir DIR`) and name the "
    "local folder instead: longembed:DIR/<config> (a folder with corpus/queries/qrels files)"
)


def _download_hint(what: str, alternative: str = LOCAL_LONGEMBED) -> str:
    return (
        f"{what} is not available here (offline, or not downloaded yet). Run once with network access (datasets "
        "caches it under $HF_HOME, default ~/.cache/huggingface; set HF_HOME to use a cache copied from another "
        f"machine), or {alternative}"
    )


# ------------------------------------------------------------------ LongEmbed


def _frames_from_folder(folder: Path) -> dict:
    import pandas as pd

    if (folder / "dataset_dict.json").is_file():
        import datasets

        dd = datasets.load_from_disk(str(folder))
        return {s: dd[s].to_pandas() for s in LONGEMBED_SPLITS if s in dd}
    frames = {}
    for split in LONGEMBED_SPLITS:
        for ext, read in ((".jsonl", lambda p: pd.read_json(p, lines=True, dtype=False)),
                          (".json", lambda p: pd.read_json(p, dtype=False)), (".parquet", pd.read_parquet)):
            if (folder / f"{split}{ext}").is_file():
                frames[split] = read(folder / f"{split}{ext}")
                break
    return frames


def _frames_from_hub(config: str) -> dict:
    import datasets

    try:
        dd = datasets.load_dataset(LONGEMBED_REPO, name=config)
    except Exception as e:  # offline, not cached, hub unreachable: all mean "download it first"
        raise TaskUnavailable(f"{_download_hint(f'longembed:{config} (hub dataset {LONGEMBED_REPO}, config {config})')}"
                              f" [{type(e).__name__}: {str(e)[:200]}]") from None
    return {s: dd[s].to_pandas() for s in LONGEMBED_SPLITS if s in dd}


def longembed_source(arg: str) -> tuple[str, Path | None]:
    """(task name, local folder or None for the hub) for the part after `longembed:`."""
    path = Path(arg).expanduser()
    if arg not in LONGEMBED_CONFIGS and ("/" in arg or path.exists()):
        return f"longembed:{path.name}", path
    return f"longembed:{arg}", None


def check_longembed(arg: str) -> None:
    name, folder = longembed_source(arg)
    if folder is None and arg not in LONGEMBED_CONFIGS:
        raise TaskUnavailable(f"task 'longembed:{arg}': unknown LongEmbed config {arg!r}; choose from: "
                              f"{', '.join(LONGEMBED_CONFIGS)} (or longembed:<local folder>)")
    if folder is not None and not folder.is_dir():
        raise TaskUnavailable(f"task 'longembed:{arg}': folder {str(folder)!r} does not exist")


def load_longembed(arg: str) -> RetrievalTask:
    check_longembed(arg)
    name, folder = longembed_source(arg)
    frames = _frames_from_folder(folder) if folder is not None else _frames_from_hub(arg)
    missing = [s for s in LONGEMBED_SPLITS if s not in frames]
    if missing:
        raise TaskUnavailable(f"task {name!r}: {folder or LONGEMBED_REPO} has no {', '.join(missing)} "
                              f"(needs {', '.join(LONGEMBED_SPLITS)})")
    return RetrievalTask(name=name, query_instruction=INSTRUCTION, splits=longembed_splits(**frames),
                         description=f"LongEmbed {name.split(':', 1)[1]} ({folder or LONGEMBED_REPO})")


def longembed_splits(corpus, queries, qrels) -> list[Split]:
    """One split per context_length where the data has one (passkey, needle), else one pool."""
    for df, cols in ((corpus, ("doc_id", "text")), (queries, ("qid", "text")), (qrels, ("qid", "doc_id"))):
        absent = [c for c in cols if c not in df.columns]
        if absent:
            raise TaskUnavailable(f"LongEmbed data lacks columns {absent} (has {list(df.columns)})")
    by_length = "context_length" in corpus.columns and "context_length" in queries.columns
    groups = sorted(corpus.context_length.unique()) if by_length else [None]
    splits = []
    for length in groups:
        c, q, r = corpus, queries, qrels
        if length is not None:
            c, q = corpus[corpus.context_length == length], queries[queries.context_length == length]
            r = qrels[qrels.context_length == length] if "context_length" in qrels.columns else qrels
        docs = dict(zip(c.doc_id.astype(str), c.text))
        qs = dict(zip(q.qid.astype(str), q.text))
        rel: dict[str, dict[str, int]] = {}
        for qid, did in zip(r.qid.astype(str), r.doc_id.astype(str)):
            rel.setdefault(qid, {})[did] = 1
        splits.append(real_split(qs, docs, rel, length=None if length is None else int(length)))
    return splits


# ------------------------------------------------------------------ mteb


def _mteb():
    try:
        import mteb
    except ImportError:
        raise TaskUnavailable("mteb: task names need the mteb package: pip install mteb") from None
    return mteb


def check_mteb(name: str) -> None:
    mteb = _mteb()
    try:
        task = mteb.get_task(name)
    except Exception:
        raise TaskUnavailable(f"task 'mteb:{name}': mteb has no task {name!r} (list them with "
                              "`python -c \"import mteb; print([t.metadata.name for t in mteb.get_tasks()])\"`)") from None
    # Refused here, before training, rather than when a finished run is evaluated (FollowIR's tasks are
    # InstructionReranking, scored by p-MRR).
    if task.metadata.type != "Retrieval":
        raise TaskUnavailable(f"task 'mteb:{name}' is an mteb {task.metadata.type} task; eval.tasks takes Retrieval "
                              "tasks only: score it with mteb itself on the saved run "
                              "(mteb.evaluate(StudyEncoder.from_run(RUN), mteb.get_tasks(tasks=[...])))")


def load_mteb(name: str) -> RetrievalTask:
    check_mteb(name)
    task = _mteb().get_task(name)
    try:
        task.load_data()
    except Exception as e:
        source = task.metadata.dataset.get("path")
        alternative = LOCAL_LONGEMBED if source == LONGEMBED_REPO else "export it to a BEIR folder and use beir:<folder>"
        raise TaskUnavailable(f"{_download_hint(f'mteb:{name} (hub dataset {source})', alternative)}"
                              f" [{type(e).__name__}: {str(e)[:200]}]") from None
    return from_mteb_task(task, f"mteb:{name}")


def from_mteb_task(task, name: str | None = None) -> RetrievalTask:
    """A loaded mteb retrieval task -> our splits: one per (subset, eval split); `test_<n>` splits keep n as length."""
    if getattr(task.metadata, "type", None) != "Retrieval":
        raise TaskUnavailable(f"mteb:{task.metadata.name} is a {task.metadata.type} task; only Retrieval tasks "
                              "are supported here (run other task types through mteb itself)")
    if not task.data_loaded:
        task.load_data()
    task.convert_v1_dataset_format_to_v2(num_proc=None)
    parts = [(subset, split_name) for subset in sorted(task.dataset) for split_name in task.metadata.eval_splits
             if task.dataset[subset].get(split_name)]
    splits = []
    for subset, split_name in parts:
        data = task.dataset[subset][split_name]
        # Query ids are unique in the results table: several (subset, split) pools prefix theirs.
        tag = f"{subset}/{split_name}/" if len(parts) > 1 and not split_name.startswith("test_") else ""
        corpus = {}
        for row in data["corpus"]:
            title = (row.get("title") or "").strip()
            corpus[str(row["id"])] = f"{title}\n\n{row['text']}" if title else row["text"]
        queries = {tag + str(row["id"]): row["text"] for row in data["queries"] if isinstance(row["text"], str)}
        qrels = {tag + str(q): {str(d): int(s) for d, s in rel.items()} for q, rel in data["relevant_docs"].items()}
        tail = split_name.rsplit("_", 1)[-1]
        splits.append(real_split(queries, corpus, qrels, length=int(tail) if tail.isdigit() else None))
    return RetrievalTask(name=name or f"mteb:{task.metadata.name}", query_instruction=INSTRUCTION, splits=splits,
                         description=f"mteb task {task.metadata.name}")
