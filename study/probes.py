"""Probes of bidirectionality: how far, and in which direction, each representation uses its context.

    study probe runs/<run> [probe.lengths=[256,1024,2048] probe.distances=[64,256,1000] ...]
    study probe model.backbone=tiny-qwen2 model.attention=causal      # an untrained / off-the-shelf backbone

Retrieval scores show bidirectionality only indirectly; these measure it directly, on real text (the
King James Bible documents of the `needle` task, cut to each length, with the embedder's own special tokens).

(a) attention distance (task `probe/attention_distance`), from eager attention probabilities, per layer
    (column `layer`) and averaged over layers (layer null), averaged over heads, query positions, documents
    (exact definitions: study/attention_metrics.py):
      far_mass_D<D>     share of attention on keys more than D positions away (the paper: D=1000; 0 for
                        documents of <= D+1 tokens, see `length`), D from probe.distances
      forward_mass_<N>  share on the N keys just AFTER the query position (0 under causal attention), N = probe.near
      backward_mass_<N> share on the N keys just BEFORE it
      forward_mass      share on all later keys; self_mass: on the position itself
      entropy           entropy of each query's distribution, nats; entropy_norm: divided by ln(keys it can see)
(b) context sensitivity (task `probe/context_sensitivity`): at relative position `depth` p of a document,
    replace the text tokens before p (or after p) with random tokens from the probe corpus and measure
      embedding_change_before/after  1 - cosine of the pooled embedding
      state_change_before/after      1 - cosine of the final hidden state at p
    A causal model's state at p cannot see text after p: state_change_after is 0. `probe.window` > 0
    perturbs only that many tokens on each side (default 0: the whole side).

Rows follow the results-table schema (study/results.py) and go to <run>/probes.parquet (appended; a run's
training results stay in results.parquet) and to a W&B run with job_type `probe`.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from study.attention_metrics import layer_attention_metrics
from study.backbones.attention import configured_attention
from study.config import choice, load_config, load_structured, to_container
from study.encode import autocast
from study.errors import ConfigError
from study.inference import eval_builder, load_embedder, load_trained
from study.precision import PRECISIONS
from study.results import make_table, run_identity, write_table
from study.tasks.synthetic import needle
from study.tracking import finish, open_run

log = logging.getLogger(__name__)

TABLE = "probes.parquet"
ATTENTION_TASK = "probe/attention_distance"
SENSITIVITY_TASK = "probe/context_sensitivity"


@dataclass
class ProbeSettings:
    lengths: List[int] = field(default_factory=lambda: [256, 1024, 2048])
    # Attention "far" thresholds: the paper's 1000, and shorter ones that fit short documents.
    distances: List[int] = field(default_factory=lambda: [64, 256, 1000])
    near: int = 50  # forward/backward short-range window (the paper: 50 tokens)
    num_docs: int = 4
    depths: List[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 0.75, 0.9])
    window: int = 0  # tokens perturbed on each side of p; 0 = the whole side
    seed: int = 0
    # Eager attention materialises [heads, T, T] per layer: skip (a) above this length.
    attention_max_length: int = 4096
    precision: str = choice("32-true", PRECISIONS)  # fp32 so "no change" is exactly 0; bf16-mixed for big models
    attention: bool = True
    sensitivity: bool = True


@dataclass
class ProbeResult:
    table: pd.DataFrame
    path: Path | None
    summary_text: str


# ---------------------------------------------------------------- settings


@dataclass
class ProbeKeys:
    """The `probe.*` keys of `study probe`, loaded like every config (config.load_structured)."""
    probe: ProbeSettings = field(default_factory=ProbeSettings)


def parse_settings(overrides: list[str]) -> ProbeSettings:
    """`probe.*` key=value overrides -> validated ProbeSettings (ConfigError names the key and options)."""
    node = load_structured(ProbeKeys, None, overrides).probe
    s = ProbeSettings(**OmegaConf.to_container(node))
    if not s.lengths or min(s.lengths) < 16:
        raise ConfigError(f"probe.lengths={s.lengths}: give at least one length, each >= 16 tokens")
    if not s.distances or min(s.distances) < 1:
        raise ConfigError(f"probe.distances={s.distances}: each distance must be >= 1")
    if not s.depths or not all(0 < d < 1 for d in s.depths):
        raise ConfigError(f"probe.depths={s.depths}: each depth must be strictly between 0 and 1")
    for key in ("near", "num_docs"):
        if getattr(s, key) < 1:
            raise ConfigError(f"probe.{key}={getattr(s, key)} must be >= 1")
    if s.window < 0:
        raise ConfigError(f"probe.window={s.window} must be >= 0 (0 = the whole side)")
    return s


# ---------------------------------------------------------------- documents


def probe_documents(builder, settings: ProbeSettings) -> dict[int, list[tuple[str, list[int]]]]:
    """{length: [(doc_id, full id sequence of exactly `length` tokens or fewer)]}, real text."""

    usable = [n for n in settings.lengths if n <= builder.max_length]
    skipped = sorted(set(settings.lengths) - set(usable))
    if skipped:
        log.warning("probe lengths %s exceed the model's max_length %d: skipped", skipped, builder.max_length)
    if not usable:
        raise ConfigError(f"probe.lengths={settings.lengths}: all exceed the model's max_length {builder.max_length}")
    task = needle(usable, settings.num_docs, settings.num_docs, 10_000 + settings.seed)
    docs = {}
    specials = len(builder.prefix) + len(builder.suffix)
    for split in task.splits:
        out = []
        for doc_id in list(split.corpus)[: settings.num_docs]:
            ids = builder.tokenize([split.corpus[doc_id]])[0][: split.length - specials]
            seq, _ = builder.sequence(ids)
            out.append((doc_id, seq))
        docs[split.length] = out
    return docs


# ---------------------------------------------------------------- (a) attention distance


def _autocast(precision: str, device):

    return autocast(torch.device(device), precision)


@torch.inference_mode()
def attention_distance(embedder, docs, settings: ProbeSettings, device="cpu") -> list[dict]:
    """Per layer (and averaged over layers, layer null) and length: study.attention_metrics, mean over documents."""
    backbone = embedder.backbone
    hf = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    causal = configured_attention(hf.config) == "causal"
    rows = []
    for length, items in docs.items():
        if length > settings.attention_max_length:
            log.warning("attention probe skips length %d > probe.attention_max_length", length)
            continue
        sums: dict[tuple[int, str], float] = {}
        for _, seq in items:
            ids = torch.tensor([seq], device=device)
            with _autocast(settings.precision, device):
                per_layer = layer_attention_metrics(backbone, ids, torch.ones_like(ids), causal=causal,
                                                    distances=settings.distances, near=settings.near)
            for layer, values in enumerate(per_layer):
                for metric, value in values.items():
                    sums[(layer, metric)] = sums.get((layer, metric), 0.0) + value / len(items)
        layers = sorted({k[0] for k in sums})
        metrics = sorted({k[1] for k in sums})
        for metric in metrics:
            for layer in layers:
                rows.append(dict(task=ATTENTION_TASK, length=length, metric=metric, value=sums[(layer, metric)],
                                 layer=layer))
            rows.append(dict(task=ATTENTION_TASK, length=length, metric=metric, layer=None,
                             value=float(np.mean([sums[(layer, metric)] for layer in layers]))))
    return rows


# ---------------------------------------------------------------- (b) context sensitivity


@torch.inference_mode()
def context_sensitivity(embedder, builder, docs, settings: ProbeSettings, device="cpu") -> list[dict]:
    gen = torch.Generator().manual_seed(settings.seed)
    special = set(builder.prefix) | set(builder.suffix)
    pool = torch.tensor(sorted({i for items in docs.values() for _, s in items for i in s} - special))
    start, end_pad = len(builder.prefix), len(builder.suffix)
    rows = []
    for length, items in docs.items():
        for doc_id, seq in items:
            ids = torch.tensor(seq)
            first, last = start, len(seq) - end_pad - 1  # text positions [first, last]
            for depth in settings.depths:
                p = first + int(round(depth * (last - first)))
                before = list(range(first, p))
                after = list(range(p + 1, last + 1))
                if settings.window:
                    before, after = before[-settings.window:], after[: settings.window]
                variants = [ids]
                for region in (before, after):
                    v = ids.clone()
                    if region:
                        v[region] = pool[torch.randint(len(pool), (len(region),), generator=gen)]
                    variants.append(v)
                batch = torch.stack(variants).to(device)
                mask = torch.ones_like(batch)  # no padding, no instruction: every position is pooled
                with _autocast(settings.precision, device):
                    hidden = embedder.backbone(input_ids=batch, attention_mask=mask).last_hidden_state
                    emb = embedder.pooler(hidden, mask)
                hidden, emb = hidden.float(), emb.float()
                state = hidden[:, p]
                for side, k in (("before", 1), ("after", 2)):
                    values = {
                        f"embedding_change_{side}": 1 - F.cosine_similarity(emb[0], emb[k], dim=0).item(),
                        f"state_change_{side}": 1 - F.cosine_similarity(state[0], state[k], dim=0).item(),
                    }
                    for metric, value in values.items():
                        rows.append(dict(task=SENSITIVITY_TASK, length=length, depth=float(depth),
                                         query_id=doc_id, metric=metric, value=max(value, 0.0)))
    return rows + _aggregate_sensitivity(rows)


def _aggregate_sensitivity(rows: list[dict]) -> list[dict]:
    if not rows:
        return []
    df = pd.DataFrame(rows)
    out = [dict(task=t, length=n, depth=d, metric=m, value=float(g.value.mean()))
           for (t, n, d, m), g in df.groupby(["task", "length", "depth", "metric"])]
    out += [dict(task=t, length=n, metric=m, value=float(g.value.mean()))
            for (t, n, m), g in df.groupby(["task", "length", "metric"])]
    return out


# ---------------------------------------------------------------- table, W&B, entry point


def probe_embedder(embedder, builder, settings: ProbeSettings, device="cpu") -> list[dict]:
    """Both probes on an Embedder (no I/O): measurement rows (+ `layer` for attention rows)."""
    embedder.eval()
    docs = probe_documents(builder, settings)
    rows = []
    if settings.attention:
        rows += attention_distance(embedder, docs, settings, device)
    if settings.sensitivity:
        rows += context_sensitivity(embedder, builder, docs, settings, device)
    return rows


def to_table(rows: list[dict], identity: dict) -> pd.DataFrame:
    """The results-table schema plus `layer` (attention rows; null = averaged over layers or not per layer)."""

    table = make_table(rows, {"study": "", "trial": -1, **identity})  # keeps the order of `rows`
    table["layer"] = pd.array([r.get("layer") for r in rows], dtype="Int64")
    return table


def summary_text(table: pd.DataFrame) -> str:
    agg = table[table.query_id.isna() & table.layer.isna() & table.depth.isna()]
    if agg.empty:
        return "no probe rows"
    pivot = agg.pivot_table(index=["task", "metric"], columns="length", values="value", aggfunc="first")
    return "probe means by length (tokens); attention rows averaged over layers:\n" + pivot.to_string(
        float_format=lambda v: f"{v:.4f}")


def _load(run: str | None, rest: list[str]):
    """(embedder, backbone, cfg, out_dir, identity) for a run folder or an untrained backbone config."""

    if run is not None:

        run_dir = Path(run)
        bad = [o for o in rest if not o.startswith("wandb.")]
        if bad:
            raise ConfigError(f"{bad[0]!r}: with a run folder only probe.* and wandb.* keys can be given "
                              "(the model is the run's)")
        embedder, backbone, cfg = load_trained(run_dir)
        if rest:
            OmegaConf.set_readonly(cfg, False)
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest))
        identity = {"run_name": run_dir.name, "run_id": uuid.uuid4().hex[:8]}
        results = run_dir / "results.parquet"
        if results.is_file():
            first = pd.read_parquet(results, columns=["study", "trial", "run_id", "run_name"]).iloc[0]
            identity.update(study=first.study, trial=int(first.trial), run_id=first.run_id, run_name=first.run_name)
        return embedder, backbone, cfg, run_dir, identity

    cfg = load_config(None, rest)
    embedder, backbone = load_embedder(cfg)
    name = cfg.run_name or (f"probe-{Path(cfg.model.backbone).name}-{cfg.model.attention}-{cfg.model.pooling}"
                            f"-s{cfg.seed}")
    return embedder, backbone, cfg, Path(cfg.output_dir) / name, {"run_name": name, "run_id": uuid.uuid4().hex[:8]}


def run_probes(run: str | None, overrides: list[str]) -> ProbeResult:
    """`study probe`: parse, load, probe, write <out>/probes.parquet (appended) and a W&B probe run."""

    settings = parse_settings([o for o in overrides if o.startswith("probe.")])
    rest = [o for o in overrides if not o.startswith("probe.")]
    bad = [o for o in rest if "=" not in o]
    if bad:
        raise ConfigError(f"{bad[0]!r}: expected a run folder first, then key=value overrides")
    embedder, backbone, cfg, out_dir, identity = _load(run, rest)
    builder = eval_builder(cfg, backbone)
    rows = probe_embedder(embedder, builder, settings)
    identity = run_identity(identity.pop("run_id"), identity.pop("run_name"), cfg.seed, cfg.model, **identity)
    table = to_table(rows, identity)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TABLE
    if path.is_file():  # append: earlier probes (other settings) are kept
        table = pd.concat([pd.read_parquet(path), table], ignore_index=True)
    write_table(table, path)
    _log_wandb(cfg, out_dir, identity, settings, to_table(rows, identity))
    return ProbeResult(table, path, summary_text(to_table(rows, identity)))


def _log_wandb(cfg, out_dir: Path, identity: dict, settings: ProbeSettings, table: pd.DataFrame) -> None:
    run = open_run(cfg, out_dir, uuid.uuid4().hex[:8], f"{identity['run_name']}-probe", job_type="probe",
                   config={**to_container(cfg), "probe": dataclasses.asdict(settings),
                           "probed_run_id": identity["run_id"]})
    agg = table[table.query_id.isna() & table.layer.isna() & table.depth.isna()]
    summary = {f"{r.task}/{int(r.length)}/{r.metric}": r.value for r in agg.itertuples()}
    finish(run, out_dir, summary=summary, tables={"probe/results": table[table.query_id.isna()].astype(str)},
           pointer_file=None)
