"""Task registry: one way to name every evaluation task."""

from __future__ import annotations

from typing import Callable

from study.tasks.base import RetrievalTask, Split
from study.tasks.synthetic import needle, passkey

# name -> builder(lengths, num_queries, num_docs, seed)
SYNTHETIC: dict[str, Callable[..., RetrievalTask]] = {"passkey": passkey, "needle": needle}


def task_names() -> list[str]:
    return sorted(SYNTHETIC)


def check_task_names(names: list[str]) -> None:
    from study.config import ConfigError

    if not names:
        raise ConfigError(f"eval.tasks is empty; choose from: {', '.join(task_names())}")
    for name in names:
        if name not in SYNTHETIC:
            raise ConfigError(f"eval.tasks: unknown task {name!r}; choose from: {', '.join(task_names())}")


def build_task(name: str, eval_cfg) -> RetrievalTask:
    check_task_names([name])
    return SYNTHETIC[name](list(eval_cfg.lengths), eval_cfg.num_queries, eval_cfg.num_docs, eval_cfg.seed)


__all__ = ["RetrievalTask", "Split", "build_task", "check_task_names", "task_names"]
