"""Task registry: one way to name every evaluation task.

    passkey, needle          built-in synthetic (LongEmbed-style, regenerated from eval.seed)
    pydocs                   built-in real: Python 3.11 docs pages, module descriptions as queries
    pydocs-index             the same pages, queried by their back-of-book index terms
    pydocs-deep              the same pages, each found from a passage taken out of it at a recorded depth
                             (eval.num_queries passages, eval.num_docs candidate pages, from eval.seed)
    beir:<path>              any BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)
    longembed:<config>       hub dataset dwzhu/LongEmbed (narrativeqa, qmsum, 2wikimqa, summ_screen_fd,
                             passkey, needle); longembed:<folder> reads the same data from disk
    mteb:<TaskName>          an mteb retrieval task (e.g. LEMBNeedleRetrieval), loaded by mteb

`check_task_names` validates names cheaply (no data is loaded) before any
compute; `build_task` loads the data and raises TaskUnavailable (a ConfigError)
with a message saying how to get missing data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from study.tasks.base import RetrievalTask, Split, TaskUnavailable
from study.tasks.beir import check_folder, load_beir
from study.tasks.hub import check_longembed, check_mteb, load_longembed, load_mteb

# Aliased: binding the names pydocs / pydocs_deep here would hide the submodules of the same names.
from study.tasks.pydocs import pydocs as build_pydocs
from study.tasks.pydocs import pydocs_index
from study.tasks.pydocs_deep import pydocs_deep as build_pydocs_deep
from study.tasks.synthetic import needle, passkey

# name -> builder(lengths, num_queries, num_docs, seed)
SYNTHETIC: dict[str, Callable[..., RetrievalTask]] = {"passkey": passkey, "needle": needle}
REAL = ("pydocs", "pydocs-index", "pydocs-deep")
PREFIXES = {
    "beir": "beir:<path>  a BEIR-format folder",
    "longembed": "longembed:<config>  hub dwzhu/LongEmbed (or longembed:<local folder>)",
    "mteb": "mteb:<TaskName>  an mteb retrieval task",
}


def task_names() -> list[str]:
    """The built-in names (the prefixed families are in PREFIXES)."""
    return sorted(SYNTHETIC) + list(REAL)



def _valid() -> str:
    return ", ".join(task_names()) + ", " + ", ".join(v.split("  ")[0] for v in PREFIXES.values())


def parse_task_name(name: str) -> tuple[str, str]:
    """(kind, argument): ('passkey', ''), ('pydocs', ''), ('beir', '/data/x'), ... ; ConfigError if unknown."""
    if not isinstance(name, str) or not name:
        raise TaskUnavailable(f"eval.tasks: task names are non-empty strings (got {name!r}); choose from: {_valid()}")
    if name in SYNTHETIC or name in REAL:
        return name, ""
    prefix, sep, arg = name.partition(":")
    if sep and prefix in PREFIXES:
        if not arg:
            raise TaskUnavailable(f"eval.tasks: {name!r} needs an argument: {PREFIXES[prefix]}")
        return prefix, arg
    import difflib

    close = difflib.get_close_matches(name, task_names() + [f"{p}:" for p in PREFIXES], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise TaskUnavailable(f"eval.tasks: unknown task {name!r}.{hint} Choose from: {_valid()}")


def check_task_names(names: list[str]) -> None:
    """Cheap validation before compute: names parse, folders exist, configs and mteb tasks are known."""
    if not names:
        raise TaskUnavailable(f"eval.tasks is empty; choose from: {_valid()}")
    for name in names:
        kind, arg = parse_task_name(name)
        if kind == "beir":

            check_folder(Path(arg).expanduser(), name)
        elif kind == "longembed":

            check_longembed(arg)
        elif kind == "mteb":

            check_mteb(arg)
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise TaskUnavailable(f"eval.tasks lists {dupes[0]!r} twice")


def build_task(name: str, eval_cfg) -> RetrievalTask:
    kind, arg = parse_task_name(name)
    if kind in SYNTHETIC:
        return SYNTHETIC[kind](list(eval_cfg.lengths), eval_cfg.num_queries, eval_cfg.num_docs, eval_cfg.seed)
    if kind == "pydocs":
        return build_pydocs()
    if kind == "pydocs-index":
        return pydocs_index()
    if kind == "pydocs-deep":
        return build_pydocs_deep(list(eval_cfg.lengths), eval_cfg.num_queries, eval_cfg.num_docs, eval_cfg.seed)
    if kind == "beir":
        return load_beir(arg, name=f"beir:{Path(arg).expanduser().name}")
    if kind == "longembed":
        return load_longembed(arg)

    return load_mteb(arg)


__all__ = ["RetrievalTask", "Split", "TaskUnavailable", "build_task", "check_task_names",
           "parse_task_name", "task_names"]
