"""The default study in one command (`make demo` = `study demo`).

    1. set-up checks: the sweep file, its backbones and its evaluation tasks (data present), before any compute;
    2. pretraining, only for spec backbones that are `study pretrain` builds not made yet (cached);
    3. the ablation sweep (sweeps/attention_pooling.yaml): attention x pooling x seeds, seed-major and
       resumable, so a demo stopped after its first seed already holds paired comparisons;
    4. the reference rows: BM25 on the very same evaluation documents and queries (runs/<study>/reference/);
    5. the analysis notebooks -> reports/ (HTML, PNG figures, summary.md), logged to W&B as an analysis run.

Each stage is timed; the times are printed as they finish and saved in runs/<study>/demo_timing.json.
`--smoke` runs the same code path on a tiny budget (sweeps/demo_smoke.yaml): what CI runs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from study.config import load_config
from study.pretrain import load_pretrain_config, pretrain
from study.run_eval import run_eval
from study.sweep.dispatch import run_sweep
from study.sweep.spec import SweepSpec, dotlist, load_spec, trial_cell
from study.sweep.status import load_study, status_url
from study.tasks import build_task

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "sweeps" / "attention_pooling.yaml"
SMOKE_SPEC = ROOT / "sweeps" / "demo_smoke.yaml"
# Pretrained names a spec may use, with the `study pretrain` overrides that build them.
PRETRAINED = {
    "tiny-ar": ["objective=autoregressive"],
    "tiny-diffusion": ["objective=masked_diffusion"],
}
EVAL_KEYS = ("eval.", "model.max_length")


class Stages:
    """Wall time of each stage, printed when it ends."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def run(self, name: str, what: str, fn, *args, **kwargs):
        print(f"[demo] {name}: {what}", flush=True)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"[demo] {name} done in {self.seconds[name]:.1f}s", flush=True)
        return out

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.perf_counter() - self.t0, 1)}


def spec_backbones(spec: SweepSpec) -> list[str]:
    names = list(spec.space["model.backbone"].choices) if "model.backbone" in spec.space else []
    base = spec.base.get("model.backbone")
    return names + ([base] if base else [])


def pretrain_missing(names: list[str]) -> dict[str, float]:
    """Build the spec's pretrained backbones that do not exist yet; seconds per build (0 when cached)."""

    seconds = {}
    for name in names:
        if name not in PRETRAINED:
            continue
        t0 = time.perf_counter()
        pretrain(load_pretrain_config(overrides=PRETRAINED[name]))
        seconds[name] = round(time.perf_counter() - t0, 1)
    return seconds


def check_setup(spec_path: Path) -> SweepSpec:
    """Everything a demo needs, checked before compute: spec, task data, backbone names (pretrained or not)."""

    spec = load_spec(spec_path, validate_backbones=False)  # pretrained names may not be built yet
    cfg = load_config(None, dotlist(spec.base), validate_backbone=False)
    for name in cfg.eval.tasks:  # data present and parseable (e.g. the pydocs .deb): fails here, not in trial 1
        build_task(name, cfg.eval)
    return spec


def bm25_reference(spec: SweepSpec, study_dir: Path) -> Path:
    """BM25 on the sweep's evaluation documents and queries (same eval.* settings): the reference rows.

    Reused only when it was made with the same evaluation settings (reference/bm25/settings.json);
    otherwise the old folder moves to reference-stale/ and BM25 runs again."""

    out = study_dir / "reference"
    keys = {k: v for k, v in spec.base.items() if k.startswith(EVAL_KEYS)}
    settings = json.dumps(keys, sort_keys=True, default=str)
    folder = out / "bm25"
    if (folder / "results.parquet").is_file() and (folder / "settings.json").is_file() \
            and (folder / "settings.json").read_text() == settings:
        return folder / "results.parquet"
    if folder.exists():
        stale = study_dir / "reference-stale" / f"bm25-{time.strftime('%Y%m%d-%H%M%S')}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(stale)
        log.warning("BM25 reference made with other evaluation settings: moved to %s", stale)
    result = run_eval("bm25", dotlist(keys) + [f"output_dir={out}", "run_name=bm25"])
    (result.eval_dir / "settings.json").write_text(settings)
    return result.eval_dir / "results.parquet"


def failed_cells(name: str) -> int:
    """Grid cells whose every trial failed (cells only queued, left by the time budget, do not count)."""
    from optuna.trial import TrialState


    states: dict[str, set] = {}
    for t in load_study(name, status_url(name, None)).get_trials(deepcopy=False):
        if "skipped" not in t.user_attrs:
            states.setdefault(trial_cell(t), set()).add(t.state)
    return sum(1 for s in states.values() if s == {TrialState.FAIL})


def seeds_done(study_dir: Path) -> list[int]:
    """Seeds of the study table (every cell of a seed finishes before the next seed starts)."""
    import pandas as pd

    path = study_dir / "results.parquet"
    return sorted(pd.read_parquet(path, columns=["seed"]).seed.dropna().unique().tolist()) if path.is_file() else []


# Kept free of the sweep's time budget for the BM25 reference and the notebooks (measured: ~1 min together).
RESERVE_MINUTES = 2.0


def run_demo(smoke: bool = False, workers: int = 1, reports: str | Path = "reports",
             budget_minutes: float | None = 30.0) -> int:
    from analysis.report import build_report

    spec_path = SMOKE_SPEC if smoke else SPEC
    stages = Stages()
    spec = stages.run("setup", f"checking {spec_path.name} and its task data", check_setup, spec_path)
    stages.run("pretrain", "pretrained backbones of the spec (cached)", pretrain_missing, spec_backbones(spec))
    spec = load_spec(spec_path)  # now every backbone name resolves
    study_dir = Path("runs") / spec.name
    sweep_minutes = None
    if budget_minutes is not None and not smoke:
        sweep_minutes = max(0.1, budget_minutes - RESERVE_MINUTES - (time.perf_counter() - stages.t0) / 60)
    code = stages.run("sweep", spec.description, run_sweep, spec_path, workers=workers, budget_minutes=sweep_minutes)
    done = seeds_done(study_dir)
    if code and not failed_cells(spec.name):  # cells left for a later run by the budget are not a failure
        code = 0
    if len(done) < len(spec.seeds):
        print(f"[demo] {len(done)} of {len(spec.seeds)} seeds fit the {budget_minutes:g}-minute budget; the same "
              "command runs the rest later (finished trials are kept)", flush=True)
    stages.run("reference", "BM25 on the same documents", bm25_reference, spec, study_dir)
    out = stages.run("report", f"analysis notebooks -> {reports}", build_report, study=spec.name, out_dir=reports)
    timings = stages.total()
    (study_dir / "demo_timing.json").write_text(json.dumps(timings, indent=2))
    print(f"\n[demo] done in {timings['total'] / 60:.1f} min: " + ", ".join(
        f"{k} {v:.0f}s" for k, v in timings.items() if k != "total"))
    for path in out["html"].values():
        print(f"  report:  {path}")
    print(f"  figures: {Path(reports) / 'figures'}/*.png   summary: {Path(reports) / 'summary.md'}")
    print(f"  results: {study_dir / 'results.parquet'}   trials: study status {spec.name}")
    print(f"  W&B (offline): upload finished trials with  study status {spec.name} --wandb-dirs | xargs wandb sync")
    return code
