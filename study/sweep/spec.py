"""Sweep files (sweeps/*.yaml): read, validate, and turn trials into config overrides.

Everything a sweep could get wrong is checked here, before a study is created or a
model is built: unknown keys, an empty grid, a metric no run reports, a space value
the config schema refuses (every grid cell's merged config is validated), a pruner
without validation data. Errors are ConfigError naming the value and the options.

    name: attention_pooling            # study name (folder runs/<name>/); --study-name overrides
    description: ...
    recipe: ../configs/recipes/x.yaml  # optional: a `study train --config` file under base (path from this file)
    base: {trainer.max_steps: 60}      # config overrides for every trial (mapping or key=value list)
    space:                             # config key -> distribution; empty (or left out) with sampler grid:
                                       #   the base config once per seed (a replication study)
      model.attention: {type: categorical, choices: [bidirectional, causal]}
      optim.lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
      trainer.max_steps: {type: int, low: 20, high: 60, step: 20}
    sampler: grid                      # grid | tpe | random
    seeds: [0, 1, 2]                   # grid: every cell runs once per seed; tpe/random: one seed
    objective: {metric: average/ndcg_at_1, direction: maximize}
    pruner: {type: median, n_startup_trials: 3, n_warmup_steps: 10}   # median | threshold | none
    n_trials: 20                       # budget for tpe/random
    heartbeat: {interval: 30, grace_period: 120, max_retries: 2}      # crash detection (RDB storage)
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from study.config import choice, load_config, load_yaml, schema_node, structured_mapping
from study.errors import ConfigError
from study.evaluate import METRICS

SAMPLERS = ("grid", "tpe", "random")
PARAM_TYPES = ("categorical", "int", "float")
PRUNERS = ("median", "threshold", "none")
DIRECTIONS = ("maximize", "minimize")
PARAM_KEYS = {"categorical": ("type", "choices"), "int": ("type", "low", "high", "step", "log"),
              "float": ("type", "low", "high", "step", "log")}
PRUNER_KEYS = {"median": ("type", "n_startup_trials", "n_warmup_steps"),
               "threshold": ("type", "lower", "upper", "n_warmup_steps"), "none": ("type",)}
# Keys the sweep itself sets for every trial; sweeping them would break the study layout.
RESERVED = ("seed", "run_name", "output_dir", "wandb.group", "wandb.job_type")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
PAIRED_AXIS = "model.attention"  # the contrast the default study is about: its pairs are queued together
# A worker's processes (study/trial_group.py) are fixed for its lifetime: these go in base, not in space.
PER_WORKER = ("trainer.devices", "trainer.num_nodes", "trainer.accelerator")


@dataclass
class Objective:
    metric: str = "average/ndcg_at_1"  # checked against what the runs report (valid_metrics)
    direction: str = choice("maximize", DIRECTIONS)


@dataclass
class Heartbeat:  # crash detection on RDB storage
    interval: int = 30
    grace_period: Optional[int] = None  # default: 4 x interval
    max_retries: int = 2


@dataclass
class SweepFile:
    """The keys of a sweep file, read with the config schema checks (config.structured_mapping); the fields typed
    Any have their own grammar below (base: config keys, space: distributions, pruner: by type)."""
    name: Any = None
    description: Optional[str] = ""
    recipe: Any = None
    base: Any = None
    space: Any = None
    sampler: str = choice("grid", SAMPLERS)
    seeds: Any = field(default_factory=lambda: [0])
    objective: Objective = field(default_factory=Objective)
    pruner: Any = None
    n_trials: Any = None
    heartbeat: Heartbeat = field(default_factory=Heartbeat)


@dataclass(frozen=True)
class Param:
    key: str
    type: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    def grid_values(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        step = self.step or 1
        return list(range(int(self.low), int(self.high) + 1, int(step)))

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


@dataclass
class SweepSpec:
    name: str
    description: str
    base: dict[str, Any]
    space: dict[str, Param]
    sampler: str
    seeds: list[int]
    metric: str
    direction: str
    pruner: dict[str, Any]
    n_trials: int | None
    heartbeat_interval: int
    grace_period: int
    max_retries: int
    raw: dict = field(default_factory=dict)  # the normalised spec, stored with the study

    @property
    def grid(self) -> bool:
        return self.sampler == "grid"

    def cells(self) -> list[dict[str, Any]]:
        """Grid: every combination of the space's values, times every seed (seed is a param).

        Seed-major (all cells of the first seed, then the next seed, ...) with the attention axis
        innermost, so a grid stopped early already holds complete bidirectional/causal pairs."""
        keys = sorted(self.space, key=lambda k: k == PAIRED_AXIS)  # stable: the spec's order otherwise
        combos = itertools.product(self.seeds, *(self.space[k].grid_values() for k in keys))
        return [{**dict(zip(keys, values[1:])), "seed": values[0]} for values in combos]

    def suggest(self, trial) -> dict[str, Any]:
        """The trial's params (registered with Optuna, so dashboards show them); seed included."""
        params = {key: p.suggest(trial) for key, p in self.space.items()}
        params["seed"] = trial.suggest_categorical("seed", self.seeds) if self.grid else self.seeds[0]
        return params

    def overrides(self, params: dict[str, Any]) -> list[str]:
        return dotlist(self.base) + dotlist(params)

    def tags(self, params: dict[str, Any]) -> list[str]:
        """W&B tags from the ablation params: 'attention=causal', 'seed=1' (<= 64 chars each)."""
        return [f"{k.rsplit('.', 1)[-1]}={_short(v)}"[:64] for k, v in params.items()]


def cell_key(params: dict[str, Any]) -> str:
    """A canonical string for a cell, to find it among trials in any state."""
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)


def dotlist(mapping: dict[str, Any]) -> list[str]:
    # JSON is valid YAML flow syntax, so strings, numbers, lists and null round-trip exactly.
    return [f"{k}={json.dumps(v)}" for k, v in mapping.items()]


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"sweep {path}: {message}")


def _check_keys(where: str, got: dict, allowed: tuple, path: str) -> None:
    for k in got:
        if k not in allowed:
            raise _fail(path, f"unknown key {where}{k!r}; valid keys: {', '.join(allowed)}")


def _number(path: str, where: str, value: Any, kind: type = float) -> float | int:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise _fail(path, f"{where}={value!r} must be {'an integer' if kind is int else 'a number'}")
    return kind(value)


def _parse_base(base: Any, path: str) -> dict[str, Any]:
    if base is None:
        return {}
    if isinstance(base, list):
        if not all(isinstance(o, str) and "=" in o for o in base):
            raise _fail(path, f"base={base!r}: a list must hold key=value strings")
        base = OmegaConf.to_container(OmegaConf.from_dotlist(base))
    if not isinstance(base, dict):
        raise _fail(path, f"base must be a mapping of config keys (or a key=value list), got {base!r}")
    flat = _flatten(base)
    for key in flat:
        schema_node(key)  # ConfigError naming the key and suggestions
        if key in RESERVED and key != "output_dir":  # base output_dir is where runs/<study>/ goes
            raise _fail(path, f"base may not set {key!r}: the sweep sets {', '.join(RESERVED)} per trial")
    return flat


def _recipe(recipe: Any, path: str) -> dict[str, Any]:
    """`recipe: ../configs/recipes/x.yaml`: a `study train --config` file under base (base's keys win).
    The path is relative to the sweep file's folder."""
    if recipe is None:
        return {}
    file = Path(path).parent / str(recipe)
    if not isinstance(recipe, str) or not file.is_file():
        raise _fail(path, f"recipe={recipe!r}: no such file {str(file)!r} (give a config file path relative to the "
                          "sweep file's folder)")
    layer = load_yaml(file, f"sweep {path}: recipe")
    if not isinstance(layer, DictConfig):
        raise _fail(path, f"recipe {str(file)!r} must hold a mapping of config keys")
    return _parse_base(OmegaConf.to_container(layer, resolve=True), f"{path} (recipe {recipe})")


def _parse_param(key: str, raw: Any, path: str) -> Param:
    try:
        schema_node(key)
    except ConfigError as e:
        raise _fail(path, f"space: {e}") from None
    if key in RESERVED:
        hint = " (use `seeds: [...]` for seeds)" if key == "seed" else ""
        raise _fail(path, f"space may not sweep {key!r}{hint}; the sweep sets {', '.join(RESERVED)} itself")
    if key in PER_WORKER:
        raise _fail(path, f"space may not sweep {key!r}: a worker's processes are set once for its lifetime; "
                          f"set {', '.join(PER_WORKER)} in base (or run one sweep per setting)")
    if not isinstance(raw, dict) or raw.get("type") not in PARAM_TYPES:
        got = raw.get("type") if isinstance(raw, dict) else raw
        raise _fail(path, f"space.{key}: type={got!r} is not valid; choose one of: {', '.join(PARAM_TYPES)}")
    kind = raw["type"]
    _check_keys(f"in space.{key}: ", raw, PARAM_KEYS[kind], path)
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _fail(path, f"space.{key}.choices={choices!r} must be a non-empty list")
        if len({json.dumps(c, default=str) for c in choices}) != len(choices):
            raise _fail(path, f"space.{key}.choices={choices!r} repeats a value")
        return Param(key, kind, choices=tuple(choices))
    num = int if kind == "int" else float
    low = _number(path, f"space.{key}.low", raw.get("low"), num)
    high = _number(path, f"space.{key}.high", raw.get("high"), num)
    step = raw.get("step")
    step = None if step is None else _number(path, f"space.{key}.step", step, num)
    log = bool(raw.get("log", False))
    if low > high or (low == high and kind == "float"):
        raise _fail(path, f"space.{key}: low={low} must be below high={high}")
    if step is not None and step <= 0:
        raise _fail(path, f"space.{key}.step={step} must be > 0")
    if log and low <= 0:
        raise _fail(path, f"space.{key}: log=true needs low > 0 (got low={low})")
    if log and step is not None:
        raise _fail(path, f"space.{key}: log=true and step cannot be combined")
    return Param(key, kind, low=low, high=high, step=step, log=log)


def valid_metrics(cfg: DictConfig) -> list[str]:
    """What a run's summary holds: average/<m>, <task>/<m>, <task>/<length>/<m>."""
    tasks = list(cfg.eval.tasks)
    names = [f"average/{m}" for m in METRICS] + [f"{t}/{m}" for t in tasks for m in METRICS]
    return names + [f"{t}/{n}/{m}" for t in tasks for n in cfg.eval.lengths for m in METRICS]


def _check_metric(metric: Any, cfg: DictConfig, path: str, where: str) -> None:
    valid = valid_metrics(cfg)
    if metric not in valid:
        shown = [f"average/{m}" for m in METRICS] + [f"<task>/{METRICS[0]}", f"<task>/<length>/{METRICS[0]}"]
        raise _fail(path, f"objective.metric={metric!r} is not reported by a run{where}; choose one of: "
                          f"{', '.join(shown)} with task in {list(cfg.eval.tasks)}, length in "
                          f"{list(cfg.eval.lengths)} and metric in {', '.join(METRICS)}")


def load_spec(path: str | Path, validate_backbones: bool = True) -> SweepSpec:
    """Read and validate a sweep file; ConfigError before anything starts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file '{path}' does not exist")
    raw = load_yaml(path, "sweep file")
    if not isinstance(raw, DictConfig):
        raise _fail(str(path), "must hold a mapping (name, base, space, sampler, seeds, objective, ...)")
    return parse_spec(OmegaConf.to_container(raw, resolve=True), str(path), validate_backbones)


def parse_spec(raw: dict, path: str = "<spec>", validate_backbones: bool = True) -> SweepSpec:
    # `objective:` or `heartbeat:` left empty means their defaults
    raw = {k: v for k, v in raw.items() if not (k in ("objective", "heartbeat") and v is None)}
    top = structured_mapping(SweepFile, raw, f"sweep {path}")
    name = top.name
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _fail(path, f"name={name!r} must be a folder-safe name (letters, digits, . _ + -)")
    base = {**_recipe(raw.get("recipe"), path), **_parse_base(raw.get("base"), path)}
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        raise _fail(path, f"space must map config keys to distributions, got {space_raw!r}")
    space = {key: _parse_param(key, p, path) for key, p in _flatten_space(space_raw).items()}

    sampler = top.sampler
    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise _fail(path, f"seeds={seeds!r} must be a non-empty list of distinct integers")
    metric, direction = top.objective.metric, top.objective.direction
    pruner = raw.get("pruner") or {"type": "none"}
    if not isinstance(pruner, dict) or pruner.get("type") not in PRUNERS:
        got = pruner.get("type") if isinstance(pruner, dict) else pruner
        raise _fail(path, f"pruner.type={got!r} is not valid; choose one of: {', '.join(PRUNERS)}")
    _check_keys("in pruner: ", pruner, PRUNER_KEYS[pruner["type"]], path)
    n_trials = raw.get("n_trials")
    interval, retries = top.heartbeat.interval, top.heartbeat.max_retries
    grace = 4 * interval if top.heartbeat.grace_period is None else top.heartbeat.grace_period
    if interval < 1 or grace <= interval or retries < 0:
        raise _fail(path, f"heartbeat: need interval >= 1, grace_period > interval and max_retries >= 0 "
                          f"(got {interval}, {grace}, {retries})")

    if sampler == "grid":
        bad = [k for k, p in space.items() if p.type == "float"]
        if bad:
            raise _fail(path, f"sampler=grid needs categorical or int values; space.{bad[0]} is a float range "
                              "(list its values as a categorical, or use sampler: tpe | random)")
        if n_trials is not None:
            raise _fail(path, f"n_trials={n_trials!r} is for sampler tpe | random; a grid runs every cell once")
        if pruner["type"] != "none":
            raise _fail(path, "pruner must be none for sampler=grid (pruning would leave ablation cells empty)")
    else:
        if not space:
            raise _fail(path, f"space is empty: sampler={sampler} has nothing to search")
        if len(seeds) != 1:
            raise _fail(path, f"seeds={seeds!r}: sampler={sampler} compares trials at one seed; give one seed "
                              "(repeat the best settings over seeds with a grid)")
        if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
            raise _fail(path, f"n_trials={n_trials!r} must be a positive integer for sampler={sampler}")

    spec = SweepSpec(
        name=name, description=str(raw.get("description") or ""), base=base, space=space, sampler=sampler,
        seeds=list(seeds), metric=metric, direction=direction, pruner=dict(pruner), n_trials=n_trials,
        heartbeat_interval=interval, grace_period=grace, max_retries=retries,
    )
    spec.raw = {
        "name": name, "base": base, "space": {k: _param_dict(p) for k, p in space.items()}, "sampler": sampler,
        "seeds": spec.seeds, "objective": {"metric": metric, "direction": direction}, "pruner": spec.pruner,
        "n_trials": n_trials,
    }
    _validate_configs(spec, path, validate_backbones)
    return spec


def _flatten_space(space: dict) -> dict[str, Any]:
    """Allow nested keys (model: {attention: {...}}) as well as dotted ones."""
    out: dict[str, Any] = {}
    for k, v in space.items():
        if isinstance(v, dict) and "type" not in v and v:
            out.update({f"{k}.{sub}": d for sub, d in _flatten_space(v).items()})
        else:
            out[k] = v
    return out


def _param_dict(p: Param) -> dict:
    if p.type == "categorical":
        return {"type": p.type, "choices": list(p.choices)}
    return {"type": p.type, "low": p.low, "high": p.high, "step": p.step, "log": p.log}


def _validate_configs(spec: SweepSpec, path: str, validate_backbones: bool = True) -> None:
    """Every grid cell's merged config (or each value of a tpe/random space) must load."""
    if spec.grid:
        cells = spec.cells()
        if not cells:
            raise _fail(path, "the grid is empty (no cells)")
        candidates = cells
    else:
        candidates = [{"seed": spec.seeds[0]}]
        for key, p in spec.space.items():
            values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
            candidates += [{key: v, "seed": spec.seeds[0]} for v in values]
    for params in candidates:
        try:
            cfg = load_config(None, spec.overrides(params), validate_backbone=validate_backbones)
        except ConfigError as e:
            shown = {k: v for k, v in params.items() if k != "seed"}
            raise _fail(path, f"{'cell ' + json.dumps(shown) if shown else 'base'}: {e}") from None
        where = f" with {json.dumps({k: v for k, v in params.items() if k != 'seed'})}" if len(params) > 1 else ""
        _check_metric(spec.metric, cfg, path, where)
        if spec.pruner["type"] != "none" and cfg.data.num_val_pairs < 1:
            raise _fail(path, f"pruner.type={spec.pruner['type']} needs validation scores: "
                              "set base data.num_val_pairs > 0")


def trial_cell(trial) -> str:
    """The grid cell an Optuna trial runs (its enqueued parameters, seed included)."""
    return cell_key(trial.system_attrs.get("fixed_params") or trial.params)
