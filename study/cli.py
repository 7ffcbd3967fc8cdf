"""`study` command line: the only module that knows about argv.

    study train [--config FILE] [key=value ...]     fine-tune + evaluate one model
    study config [--config FILE] [key=value ...]    print the resolved config (validation only)
    study pretrain [--config FILE] [key=value ...]  pretrain tiny-ar / tiny-diffusion / tiny-ar-mntp (cached)
    study demo [--smoke] [--budget-minutes M]       the default study: sweep, BM25 reference, report
    study bench [--long] [--quick]                  throughput vs the machine's measured peak -> bench_results/
    study backbones                                 list registered backbones
    study tasks                                     list evaluation tasks
    study eval [RUN | bm25] [key=value ...]         score a trained run, an off-the-shelf model or BM25 on tasks
    study build-task pydocs                         build the offline real-text task (fetches python3.11-doc)
    study sweep SPEC [--workers N] [--storage URL]  Optuna sweep of ablation runs (study/sweep/)
    study plan SPEC_OR_CONFIG [--gpu h100] [...]    cost plan: FLOPs, wall time, GPU-hours, memory per GPU
    study status STUDY [--storage URL]              trials, states and failures of a sweep
    study report --study NAME | --results PATH ... | --wandb ENTITY/PROJECT --group G   notebooks -> reports/
    study power STUDY [--target POINTS]             size a study from its pilot: interval widths, cheapest design
    study verify-backbone NAME                      Dream/LLaDA: native load vs their remote code
    study export RUN OUT                            a trained run as a sentence-transformers folder
    study probe [RUN] [key=value ...]               attention distance and context sensitivity of a model
    study gpu-smoke [--tiny]                        once per GPU machine, under torchrun (scripts/gpu_smoke.sh)
    study trial-worker [ACCELERATOR]                internal: a follower rank of a multi-device sweep trial

Bad input exits with code 2 and a message naming the key, the value and the
valid options, before any model is built.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from study.errors import ConfigError

# Each command imports what it needs when it runs (the one place project imports sit inside functions, on
# purpose): `study --help` and bad-input errors stay instant, while torch, Lightning and transformers take
# seconds to import.


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("WANDB_SILENT", "true")
    import warnings

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _setup_logging(verbose: bool = False) -> None:
    from study.launch import is_side_effect_process

    # Under torchrun/srun every rank runs the command: the others would repeat rank 0's log.
    level = (logging.DEBUG if verbose else logging.INFO) if is_side_effect_process() else logging.WARNING
    logging.basicConfig(level=level,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of config keys (merged over the defaults)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. model.attention=causal model.pooling=last_token seed=1")


def print_scores(table, metric: str = "ndcg_at_1") -> None:
    agg = table[(table.query_id.isna()) & (table.depth_bucket.isna()) & (table.metric == metric)]
    if agg.empty:
        return
    pivot = agg.assign(length=agg.length.astype("string").fillna("avg")).pivot_table(
        index="task", columns="length", values="value", aggfunc="first")
    cols = [c for c in pivot.columns if c != "avg"]
    pivot = pivot[sorted(cols, key=int) + (["avg"] if "avg" in pivot.columns else [])]
    print(f"\n{metric} by task and document length (tokens):")
    print(pivot.round(3).to_string())


def cmd_train(args) -> int:
    from study.config import load_config

    cfg = load_config(args.config, args.overrides)
    from study.results import POINTER, TABLE
    from study.train import train_and_evaluate

    result = train_and_evaluate(cfg)
    if result is None:
        return 0
    print_scores(result.table)
    print(f"\nrun folder: {result.run_dir}")
    print(f"  results:  {result.run_dir / TABLE}")
    print(f"  config:   {result.run_dir / 'config.yaml'}")
    print(f"  W&B:      {result.run_dir / POINTER} (offline runs upload with `wandb sync <dir>`)")
    return 0


def cmd_config(args) -> int:
    from omegaconf import OmegaConf

    from study.config import load_config

    print(OmegaConf.to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def cmd_backbones(args) -> int:
    from study.backbones.registry import REGISTRY

    width = max(map(len, REGISTRY))
    for name, spec in REGISTRY.items():
        natural = f" [natural: {spec.natural}]" if spec.natural else ""
        print(f"{name:<{width}}  {spec.source:<40}  {spec.description}{natural}")
    print("\nAlso accepted: any Hugging Face hub id (org/name) or a local save_pretrained folder.")
    return 0


def cmd_tasks(args) -> int:
    from study.tasks import PREFIXES, task_names

    for name in task_names():
        print(name)
    for usage in PREFIXES.values():
        print(usage)
    return 0


def cmd_sweep(args) -> int:
    from study.sweep.dispatch import run_sweep

    _check_flags(args, "--workers")
    if args.plan:  # the cost of the whole grid; nothing is created
        return _print_plan(args.spec, [], args)

    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes {args.budget_minutes:g} must be > 0")
    return run_sweep(args.spec, workers=args.workers, storage=args.storage, study_name=args.study_name,
                     worker_only=args.worker, budget_minutes=args.budget_minutes)


def cmd_status(args) -> int:
    from study.sweep.dispatch import STORAGE_ENV
    from study.sweep.status import print_status, print_wandb_dirs, status_url

    url = status_url(args.study, args.storage or os.environ.get(STORAGE_ENV))
    return print_wandb_dirs(args.study, url) if args.wandb_dirs else print_status(args.study, url)


def cmd_eval(args) -> int:
    from study.results import POINTER, TABLE
    from study.run_eval import run_eval

    targets = [a for a in args.args if "=" not in a]
    if len(targets) > 1:
        raise ConfigError(f"study eval takes one run folder (or 'bm25'), got {targets}")
    result = run_eval(targets[0] if targets else None, [a for a in args.args if "=" in a], args.config)
    print_scores(result.table)
    print(f"\nevaluation folder: {result.eval_dir}")
    print(f"  results:  {result.eval_dir / TABLE}")
    print(f"  W&B:      {result.eval_dir / POINTER} (job_type eval)")
    return 0


def cmd_build_task(args) -> int:
    from study.tasks.pydocs import download_deb, find_deb, pydocs_dir

    deb = find_deb() or download_deb()
    out = pydocs_dir(deb)
    print((out / "manifest.json").read_text(), end="")
    print(f"task folder: {out}")
    return 0


def _check_flags(args, *names: str, minimum: float = 1) -> None:
    """Numeric flags that must be >= minimum (None: not given): exit code 2 naming the flag and the value."""
    for name in names:
        value = getattr(args, name.lstrip("-").replace("-", "_"), None)
        if value is not None and value < minimum:
            raise ConfigError(f"{name} {value!r} must be >= {minimum:g}")


def _print_plan(path: str, overrides: list[str], args) -> int:
    from study.plan import format_plan, plan_file

    _check_flags(args, "--query-tokens", "--doc-tokens")

    rows = plan_file(path, overrides, args.gpu, args.utilization, args.query_tokens, args.doc_tokens)
    print(format_plan(rows, args.gpu, args.utilization, args.query_tokens, args.doc_tokens))
    return 0


def cmd_plan(args) -> int:
    return _print_plan(args.file, args.overrides, args)


def _add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", default="h100", help="h100 | h200 | a100 | l40s | cpu (measured) (default h100)")
    p.add_argument("--utilization", type=float, default=0.4, help="share of peak FLOP/s reached (default 0.4)")
    p.add_argument("--query-tokens", type=int, default=64, help="tokens per training query (default 64)")
    p.add_argument("--doc-tokens", type=int, help="tokens per training document (default model.max_length)")


COMMANDS = {"train": cmd_train, "config": cmd_config, "backbones": cmd_backbones, "tasks": cmd_tasks}
COMMANDS.update(sweep=cmd_sweep, status=cmd_status, plan=cmd_plan)
COMMANDS.update({"eval": cmd_eval, "build-task": cmd_build_task})


def cmd_report(args) -> int:
    from analysis.report import build_report

    out = build_report(args.results, args.study, args.wandb, args.group, args.out, args.runs_dir, args.optuna,
                       args.metric, args.correction, args.resamples, log_wandb=not args.no_wandb)
    for path in out["html"].values():
        print(f"report:  {path}")
    print(f"figures: {len(out['figures'])} PNG files in {args.out}/figures/")
    if out["wandb"]:
        w = out["wandb"]
        print(f"W&B:     analysis run {w['name']} ({w['mode']})"
              + (f"; upload with `wandb sync {w['dir']}`" if w["mode"] == "offline" else ""))
    return 0


COMMANDS["report"] = cmd_report


def cmd_verify_backbone(args) -> int:
    from study.backbones.verify import verify_backbone

    r = verify_backbone(args.name, dtype=args.dtype, device=args.device)
    print(f"{args.name} ({r['kind']}): native vs remote code, bidirectional, {r['tokens']} tokens, "
          f"{r['dtype']} on {r['device']}")
    print(f"  last hidden state: max abs diff {r['max_abs_diff']:.3g} (max |h| {r['max_abs_value']:.3g}, "
          f"relative {r['relative']:.3g}, tolerance {args.tolerance:g}); min token cosine {r['min_cosine']:.6f}")
    print(f"  causality probe: native {r['native_attention']}, remote code {r['remote_attention']}")
    ok = r["finite"] and r["relative"] <= args.tolerance
    print("  OK" if ok else "  MISMATCH: the native mapping does not reproduce the remote code")
    return 0 if ok else 1


COMMANDS["verify-backbone"] = cmd_verify_backbone


def cmd_export(args) -> int:
    from study.export import export

    info = export(args.run, args.out, args.format, verify=not args.no_verify)
    print(f"exported {args.run} ({info['attention']} attention, {info['pooling']} pooling -> {info['st_pooling']}, "
          f"padding {info['padding_side']}) as {info['format']} to {args.out}")
    if "min_cosine" in info:
        print(f"  check: cosine with the run's own embeddings >= {info['min_cosine']:.6f}")
    print(f"  load with: SentenceTransformer({str(args.out)!r})")
    return 0


def cmd_probe(args) -> int:
    from study.probes import run_probes

    run = args.args[0] if args.args and "=" not in args.args[0] else None
    result = run_probes(run, [a for a in args.args if a != run])
    print(result.summary_text)
    print(f"\nprobe rows: {result.path}")
    return 0


COMMANDS.update({"export": cmd_export, "probe": cmd_probe})


def cmd_pretrain(args) -> int:
    from study.pretrain import load_pretrain_config, pretrain

    result = pretrain(load_pretrain_config(args.config, args.overrides))
    m = result.manifest.get("metrics", {})
    if result.cached:
        print(f"cached: {result.name} -> {result.folder}")
    else:
        print(f"pretrained {result.name}: {m['tokens']:,} tokens, {m['steps']} steps in {m['wall_seconds']:.0f}s "
              f"({m['tokens_per_second']:,.0f} tokens/s), val_loss {m['val_loss']:.4f} "
              f"(perplexity {m['val_perplexity']:.1f})")
        print(f"  folder: {result.folder}")
    print(f"  use it: study train model.backbone={result.name}")
    return 0


COMMANDS["pretrain"] = cmd_pretrain


def cmd_power(args) -> int:
    from pathlib import Path

    from analysis.power import pilot_report

    if not args.target > 0 or (args.budget_minutes is not None and not args.budget_minutes > 0):
        raise ConfigError(f"--target {args.target!r} and --budget-minutes {args.budget_minutes!r} must be > 0")
    if not (Path(args.runs_dir) / args.study / "results.parquet").is_file():
        raise ConfigError(f"study power {args.study!r}: no pilot table {Path(args.runs_dir) / args.study / 'results.parquet'} "
                          "(run the pilot sweep first, or give --runs-dir)")

    design, designs, comp, facts = pilot_report(args.study, args.runs_dir, args.metric, args.target / 100,
                                                args.budget_minutes)
    print(f"pilot {args.study}: {facts['cells_per_seed']} cells x {facts['pilot_seeds']} seeds, "
          f"{facts['pilot_queries_per_group']} queries per (task, length); trial = {facts['train_seconds']:.0f}s "
          f"training + {facts['eval_seconds']:.0f}s evaluation (medians)")
    print(f"\nvariance components of bidirectional - causal ({args.metric}, score units^2):")
    print(comp.round(5).to_string(index=False))
    table = designs.assign(worst_half_width=(100 * designs.worst_half_width).round(1), minutes=designs.minutes.round(0))
    print("\ndesigns: the worst cell's 95% half-width in points")
    print(table.pivot(index="queries_per_group", columns="seeds", values="worst_half_width").to_string())
    print("\nand the minutes of trials for the whole grid")
    print(table.pivot(index="queries_per_group", columns="seeds", values="minutes").astype(int).to_string())
    if design is None:
        print(f"\nno design reaches +-{args.target:g} points" +
              (f" within {args.budget_minutes:g} minutes" if args.budget_minutes else ""))
        return 1
    print(f"\nchosen: {design.seeds} seeds x {design.queries_per_group} queries per (task, length): worst cell "
          f"+-{100 * design.worst_half_width:.2f} points, about {design.minutes:.0f} min of trials")
    return 0


COMMANDS["power"] = cmd_power


def cmd_demo(args) -> int:
    from study.demo import run_demo

    _check_flags(args, "--workers")
    if args.budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes {args.budget_minutes:g} must be > 0")
    return run_demo(smoke=args.smoke, workers=args.workers, reports=args.out, budget_minutes=args.budget_minutes)


COMMANDS["demo"] = cmd_demo


def cmd_bench(args) -> int:
    import warnings

    from study import bench

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("study").setLevel(logging.WARNING)
    os.environ["STUDY_BENCH_CLOCK"] = args.clock
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["STUDY_BENCH_THREADS"] = str(args.threads)  # the long suite's child processes
    quick = dict(docs=32, steps=4, repeats=1, lengths=[512, 2048], long_lengths=[256, 1024, 4096],
                 long_queries=4, long_docs=4) if args.quick else {}
    options = dict(docs=args.docs, steps=args.steps, repeats=args.repeats, lengths=args.lengths,
                   long_lengths=args.long_lengths, long_queries=args.long_queries, long_docs=args.long_docs)
    options = {k: v for k, v in options.items() if v is not None}
    result = bench.run(long=args.long, backbone=args.backbone, sweep=args.sweep, skip=tuple(args.skip),
                       trial_overrides=args.overrides,
                       **{**quick, **options})
    print(bench.format_report(result))
    print(f"\nsaved {bench.save(result, args.out)}")
    return 0


COMMANDS["bench"] = cmd_bench


def cmd_gpu_smoke(args) -> int:
    from study import gpu_smoke

    return gpu_smoke.run(tiny=args.tiny, length=args.length, batch=args.batch)


COMMANDS["gpu-smoke"] = cmd_gpu_smoke


def cmd_trial_worker(args) -> int:
    from study.trial_group import follow

    # The leader logs each trial once: a follower's console shows warnings only.
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s rank-follower %(name)s: %(message)s"))
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("study").setLevel(logging.WARNING)
    return follow(args.accelerator)


COMMANDS["trial-worker"] = cmd_trial_worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description="Embedding ablation study: attention x pooling x backbone.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_config_args(sub.add_parser("train", help="fine-tune and evaluate one embedding model"))
    _add_config_args(sub.add_parser("config", help="validate and print the resolved config"))
    _add_config_args(sub.add_parser("pretrain", help="pretrain a tiny backbone offline (objective=autoregressive|"
                                                     "masked_diffusion, adapt=mntp); cached"))
    p = sub.add_parser("demo", help="the default study: the attention x pooling sweep, BM25 reference, the report")
    p.add_argument("--smoke", action="store_true", help="the same path on a tiny budget (what CI runs)")
    p.add_argument("--budget-minutes", type=float, default=30.0,
                   help="wall-time budget of the whole demo (default 30): the sweep runs as many seeds as fit, "
                        "whole seeds only; re-running adds the rest")
    p.add_argument("--workers", type=int, default=1, help="sweep worker processes (default 1)")
    p.add_argument("--out", default="reports", help="report folder (default reports)")
    p = sub.add_parser("bench", help="throughput of training, encoding and long documents vs the measured matmul "
                                     "peak; sentence-transformers side by side (-> bench_results/)")
    p.add_argument("--long", action="store_true", help="also the passkey+needle suite at 256..32768 tokens")
    p.add_argument("--quick", action="store_true", help="small sizes: checks the path in about a minute")
    p.add_argument("--docs", type=int, help="documents in the sentence-transformers comparison (default 128)")
    p.add_argument("--steps", type=int, help="timed training steps (default 12)")
    p.add_argument("--repeats", type=int, help="alternating timing rounds, the best is kept (default 2)")
    p.add_argument("--lengths", type=int, nargs="+", help="encode lengths (default 512 1024 2048 4096)")
    p.add_argument("--backbone", default="mini-qwen2", help="backbone of the encode and long rows (default mini-qwen2)")
    p.add_argument("--sweep", default=str(Path(__file__).resolve().parents[1] / "sweeps" / "attention_pooling.yaml"),
                   help="sweep file whose trial the training rows run (default sweeps/attention_pooling.yaml)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time (default), or this process's CPU time: with --threads 1 a shared machine's other "
                        "jobs then cost nothing (with more threads it adds the threads' times)")
    p.add_argument("--long-lengths", type=int, nargs="+", help="long-suite lengths (default 256 .. 32768)")
    p.add_argument("--long-queries", type=int, help="long-suite queries per length and task (default 8)")
    p.add_argument("--long-docs", type=int, help="long-suite candidates per length and task (default 8)")
    p.add_argument("--skip", nargs="*", default=[], choices=["training", "encode", "st", "overheads"],
                   help="sections to leave out")
    p.add_argument("--out", default="bench_results", help="folder for the JSON results (default bench_results)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the training trial's config, e.g. trainer.precision=32-true")
    sub.add_parser("backbones", help="list registered backbones")
    sub.add_parser("tasks", help="list evaluation tasks")
    p = sub.add_parser("eval", help="score a trained run, an off-the-shelf model or BM25 on evaluation tasks")
    p.add_argument("--config", help="YAML file of config keys (off-the-shelf models and bm25 only)")
    p.add_argument("args", nargs="*", metavar="RUN|bm25|key=value",
                   help="a run folder or 'bm25' (neither: model.backbone=... is evaluated untrained), then "
                        "overrides, e.g. tasks=[pydocs,beir:/data/x] eval.batch_tokens=16384")
    p = sub.add_parser("build-task", help="build the offline real-text task pydocs (and show its manifest)")
    p.add_argument("name", choices=["pydocs"])
    p = sub.add_parser("sweep", help="run an Optuna sweep of ablation runs (sweeps/*.yaml)")
    p.add_argument("spec", help="sweep file, e.g. sweeps/attention_pooling.yaml")
    p.add_argument("--workers", type=int, default=1, help="local worker processes on the same study (default 1)")
    p.add_argument("--storage", help="Optuna storage: RDB URL (postgresql://user@host/db) or a .log/.journal file "
                                     "(default: $STUDY_SWEEP_STORAGE, which keeps a password off the command line; else "
                                     "sqlite:///runs/<study>/optuna.db)")
    p.add_argument("--study-name", help="study name (default: the spec's name)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a spawned worker: no set-up
    p.add_argument("--budget-minutes", type=float, help="grid sweeps: start no seed block that would end after "
                                                        "this many minutes (re-run the command to continue)")
    p.add_argument("--plan", action="store_true", help="print the grid's cost plan (FLOPs, GPU-hours, memory) and stop")
    _add_plan_args(p)
    p = sub.add_parser("plan", help="cost plan of a sweep file or a run config: FLOPs, time, GPU-hours, memory")
    p.add_argument("file", help="a sweep file (sweeps/*.yaml) or a `study train --config` file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied to every cell")
    _add_plan_args(p)
    p = sub.add_parser("status", help="trials, states, params, objective and failures of a sweep")
    p.add_argument("study", help="study name (runs/<study>/optuna.db) or use --storage")
    p.add_argument("--storage", help="Optuna storage URL or journal file (default: $STUDY_SWEEP_STORAGE, else "
                                     "runs/<study>/optuna.db)")
    p.add_argument("--wandb-dirs", action="store_true",
                   help="print only the offline W&B run folders of COMPLETE trials, one a line "
                        "(upload: study status NAME --wandb-dirs | xargs wandb sync)")
    p = sub.add_parser("report", help="run the analysis notebooks on a study's results -> reports/*.html")
    p.add_argument("--study", help="study name: runs/<study>/results.parquet (+ runs/<study>/optuna.db)")
    p.add_argument("--results", nargs="+", default=[], metavar="PATH", help="results tables, run or study folders")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B (public API) instead")
    p.add_argument("--group", help="the W&B group (the study name) with --wandb")
    p.add_argument("--optuna", metavar="STORAGE", help="Optuna storage for the sweep overview (URL, .db, journal)")
    p.add_argument("--out", default="reports", help="output folder (default reports)")
    p.add_argument("--runs-dir", default="runs", help="where --study looks (default runs)")
    p.add_argument("--metric", default="mrr_at_10", help="metric of the primary contrast (default mrr_at_10; nDCG@1 is reported alongside)")
    p.add_argument("--correction", default="holm", help="multiple-comparison correction: holm or bh")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--no-wandb", action="store_true", help="do not log the report as a W&B analysis run")
    p = sub.add_parser("power", help="size a study from its pilot: variance components, interval widths, the "
                                     "cheapest design meeting a target")
    p.add_argument("study", help="the pilot study (runs/<study>/results.parquet and optuna.db)")
    p.add_argument("--metric", default="mrr_at_10", help="metric of the primary contrast (default mrr_at_10)")
    p.add_argument("--target", type=float, default=5.0, help="95%% half-width to reach, in points (default 5)")
    p.add_argument("--budget-minutes", type=float, help="only designs whose trials fit this many minutes")
    p.add_argument("--runs-dir", default="runs", help="where the pilot lives (default runs)")
    p = sub.add_parser("verify-backbone", help="compare a Dream/LLaDA native load with its own remote code "
                                               "(needs the weights: hub access or a local folder)")
    p.add_argument("name", help="dream-7b, llada-8b, a hub id or a local checkpoint folder")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="float32 (default) compares the code, not rounding; a 7B model then needs ~32 GB")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest accepted max|diff| / max|h| of the last hidden states (default 1e-3 for float32; "
                        "bf16 rounding alone reaches ~2e-2)")
    p = sub.add_parser("export", help="write a trained run as a sentence-transformers folder")
    p.add_argument("run", help="run folder, e.g. runs/<run_name>")
    p.add_argument("out", help="output folder (must not exist or be empty)")
    p.add_argument("--format", default="sentence-transformers", help="export format: sentence-transformers")
    p.add_argument("--no-verify", action="store_true", help="skip the embedding check against the run")
    p = sub.add_parser("probe", help="attention distance and context sensitivity of a run or an untrained backbone")
    p.add_argument("args", nargs="*", metavar="RUN|key=value",
                   help="a run folder (or model.* keys for an untrained backbone), then probe.* keys, e.g. "
                        "probe.lengths=[256,1024] probe.distances=[64,256,1000]")
    p = sub.add_parser("gpu-smoke", help="once per GPU machine, under torchrun (scripts/gpu_smoke.sh): bf16, sdpa "
                                          "kernel, DDP, a 7B-shaped LoRA step, memory vs study plan")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (what the tests run)")
    p.add_argument("--length", type=int, help="document tokens in the LoRA step (default 4096; --tiny 64)")
    p.add_argument("--batch", type=int, default=4, help="queries per GPU; each has a positive and a hard negative")
    p = sub.add_parser("trial-worker", help="internal: a follower rank of a sweep worker's multi-device trial "
                                             "(started by study/trial_group.py, never by hand)")
    p.add_argument("accelerator", nargs="?", default="auto")
    return parser


RESUMABLE = ("sweep", "demo")


def _scrub_argv(args) -> None:
    """Storage URLs given on the command line may hold a password: mask it in sys.argv, which W&B records
    with every run of this process (STUDY_SWEEP_STORAGE keeps it off the command line altogether)."""
    from study.sweep.storage import mask_url, url_password

    for url in (getattr(args, "storage", None), getattr(args, "optuna", None)):
        if url and url_password(url):
            sys.argv[:] = [a.replace(url, mask_url(url)) for a in sys.argv]


def _interrupted(args, argv: list[str], stop) -> int:
    import shlex

    from study.sweep.storage import mask_url

    if args.command in RESUMABLE and not getattr(args, "worker", False):
        print(f"study: interrupted ({stop.name}); finished trials are kept, the interrupted one is marked FAIL. "
              f"Resume with the same command: "
              f"study {shlex.join(mask_url(a) for a in argv)}", file=sys.stderr)
    elif not getattr(args, "worker", False):
        print(f"study: interrupted ({stop.name})", file=sys.stderr)
    return stop.exit_code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    _setup_logging(args.verbose)
    _scrub_argv(args)
    from study import interrupts
    from study.backbones.attention import AttentionMismatch, UnsupportedBackbone

    try:
        with interrupts.handled():
            return COMMANDS[args.command](args)
    except (ConfigError, UnsupportedBackbone, AttentionMismatch) as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit) as e:  # SIGINT/SIGTERM: no traceback, 130/143
        stop = interrupts.from_exception(e)
        if stop is None:
            raise
        return _interrupted(args, argv, stop)


if __name__ == "__main__":
    sys.exit(main())
