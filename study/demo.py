"""The default study in one command (`make demo` = `study demo`).

    1. pretrain the matched tiny pair offline: tiny-ar (next-token, causal) and tiny-diffusion
       (masked diffusion, bidirectional) -- cached, so a re-run reuses them;
    2. the ablation sweep sweeps/attention_pooling.yaml: backbone x attention x pooling x seeds --
       resumable, so a re-run skips finished trials;
    3. the analysis notebooks -> reports/ (HTML, PNG figures, summary), logged to W&B as an analysis run.

`--smoke` runs the same code path on a tiny budget (sweeps/demo_smoke.yaml and a tiny pretraining
budget under other backbone names): what CI runs. The budget knobs of a bigger study are the
pretraining `tokens` and the sweep file (seeds, trainer.max_steps, eval.lengths, eval.num_docs).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "sweeps" / "attention_pooling.yaml"
SMOKE_SPEC = ROOT / "sweeps" / "demo_smoke.yaml"
OBJECTIVES = ("autoregressive", "masked_diffusion")
# Names the smoke spec refers to: a tiny budget must never replace the real tiny-ar / tiny-diffusion.
SMOKE_PRETRAIN = {"autoregressive": "smoke-ar", "masked_diffusion": "smoke-diffusion"}
SMOKE_BUDGET = ["tokens=8192", "seq_len=64", "batch_size=8", "val_tokens=1024", "eval_every=4", "warmup=2"]


def pretrain_pair(smoke: bool) -> dict[str, float]:
    from study.pretrain import load_pretrain_config, pretrain

    seconds = {}
    for objective in OBJECTIVES:
        overrides = [f"objective={objective}"]
        if smoke:
            overrides += [f"name={SMOKE_PRETRAIN[objective]}", *SMOKE_BUDGET]
        t0 = time.perf_counter()
        pretrain(load_pretrain_config(overrides=overrides))
        seconds[objective] = round(time.perf_counter() - t0, 1)
    return seconds


def run_demo(smoke: bool = False, workers: int = 1, reports: str | Path = "reports") -> int:
    from analysis.report import build_report
    from study.sweep import load_spec, run_sweep

    spec_path = SMOKE_SPEC if smoke else SPEC
    timings, t_all = {}, time.perf_counter()
    print(f"[demo] 1/3 pretraining the tiny pair ({'smoke budget' if smoke else 'default budget, cached'})", flush=True)
    timings["pretrain"] = pretrain_pair(smoke)
    spec = load_spec(spec_path)  # validated (its backbones exist now) before any trial starts
    print(f"[demo] 2/3 sweep {spec_path.name}: {spec.description}", flush=True)
    t0 = time.perf_counter()
    code = run_sweep(spec_path, workers=workers)
    timings["sweep"] = round(time.perf_counter() - t0, 1)
    print("[demo] 3/3 analysis notebooks -> " + str(reports), flush=True)
    t0 = time.perf_counter()
    out = build_report(study=spec.name, out_dir=reports)
    timings["report"] = round(time.perf_counter() - t0, 1)
    timings["total"] = round(time.perf_counter() - t_all, 1)
    study_dir = Path("runs") / spec.name
    (study_dir / "demo_timing.json").write_text(json.dumps(timings, indent=2))
    print(f"\n[demo] done in {timings['total'] / 60:.1f} min: {json.dumps(timings)}")
    for path in out["html"].values():
        print(f"  report:  {path}")
    print(f"  figures: {Path(reports) / 'figures'}/*.png   summary: {Path(reports) / 'summary.md'}")
    print(f"  results: {study_dir / 'results.parquet'}   trials: study status {spec.name}")
    print(f"  W&B (offline): upload with  wandb sync {study_dir}/trials/*/wandb/offline-run-*")
    return code
