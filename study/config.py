"""Typed run configuration: a dataclass schema, merged with OmegaConf.

Precedence: schema defaults <- YAML file (``--config``) <- ``key=value`` overrides.
Everything is validated here, before any model is built, so a typo costs a
second and a clear message instead of a crashed run. The same dotted names
(``model.attention``, ``model.pooling``, ...) are used by the CLI, the saved
``config.yaml``, the W&B config and the results table.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study.backbones.attention import ATTENTIONS
from study.backbones.registry import check_backbone_name
from study.errors import ConfigError
from study.inputs import CHUNK_AGGREGATES, ENCODINGS
from study.pooling import BIDIRECTIONAL_ONLY_POOLINGS, POOLINGS
from study.precision import PRECISIONS
from study.tasks import check_task_names

PADDING_SIDES = ("auto", "left", "right")
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = ("linear", "cosine", "constant")
WANDB_MODES = ("offline", "online", "disabled")




def choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"choices": choices})


@dataclass
class LoRAConfig:
    r: int = 0  # 0 = full fine-tuning; the paper uses r=16 for 7B backbones
    alpha: int = 32
    dropout: float = 0.05
    target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class LatentAttentionConfig:
    num_latents: int = 512
    num_heads: int = 8


@dataclass
class ChunkConfig:
    # Window of document text tokens per chunk (special tokens and the document instruction come on top).
    length: int = 512
    # Tokens shared by consecutive chunks (0 = disjoint windows); must be < length.
    overlap: int = 0
    # mean: the mean of the unit-norm chunk embeddings, renormalised (one vector per document);
    # max: a document scores as its best chunk (max-sim over chunks; evaluation only, training uses mean).
    aggregate: str = choice("mean", CHUNK_AGGREGATES)


@dataclass
class ModelConfig:
    backbone: str = "tiny-qwen2"
    attention: str = choice("bidirectional", ATTENTIONS)
    pooling: str = choice("mean", POOLINGS)
    # How a text is read: full | echo | chunked (see ENCODINGS above and docs/encodings.md).
    encoding: str = choice("full", ENCODINGS)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    # model.pooling=mask_tokens: how many mask tokens are appended and mean-pooled.
    mask_tokens: int = 4
    # Leave the instruction prefix out of the pooled tokens (LLM2Vec/DiffEmbed option).
    exclude_instruction: bool = False
    # Use each task's query instruction ("Given a question, retrieve ...: ").
    use_instructions: bool = True
    # Decoders get an EOS token appended (what last-token pooling reads, as in e5-mistral).
    append_eos: bool = True
    padding_side: str = choice("auto", PADDING_SIDES)
    max_length: int = 512
    dtype: str = choice("auto", DTYPES)
    attn_implementation: str = choice("sdpa", ATTN_IMPLEMENTATIONS)
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    latent_attention: LatentAttentionConfig = field(default_factory=LatentAttentionConfig)


@dataclass
class DataConfig:
    # "gcide-pairs" (built offline from the GCIDE dictionary), a saved `datasets`
    # folder, a .jsonl/.json/.parquet file, or a hub dataset id (needs network).
    train: str = "gcide-pairs"
    num_pairs: int = 4000
    num_val_pairs: int = 256
    hard_negatives: int = 1
    # Lengths of the built-in training documents, in words.
    doc_min_words: int = 60
    doc_max_words: int = 320


@dataclass
class LossConfig:
    temperature: float = 0.02
    # Gather in-batch negatives from every process (with gradients) under DDP.
    gather_across_processes: bool = True


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10
    scheduler: str = choice("linear", SCHEDULERS)


@dataclass
class TrainerConfig:
    max_steps: int = 150
    # Per process. The global batch of one optimizer step is batch_size x devices x num_nodes
    # x accumulate_grad_batches; in-batch negatives span batch_size x devices x num_nodes (gathered
    # across processes), so 2 devices x 8 train like 1 device x 16.
    batch_size: int = 16
    accumulate_grad_batches: int = 1
    precision: str = choice("auto", PRECISIONS)
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = choice("auto", STRATEGIES)
    num_nodes: int = 1
    val_check_interval: int = 50
    log_every_n_steps: int = 10
    num_workers: int = 0
    gradient_clip_val: float = 1.0


@dataclass
class EvalConfig:
    tasks: List[str] = field(default_factory=lambda: ["passkey", "needle"])
    lengths: List[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    num_queries: int = 50
    num_docs: int = 100
    # Evaluation data has its own seed, so every run sees the same queries and
    # documents and comparisons between runs are paired.
    seed: int = 1234
    depth_buckets: int = 5
    batch_tokens: int = 32768
    precision: str = choice("auto", PRECISIONS)
    # Truncate documents to this many tokens (None: the backbone's maximum positions).
    max_length: Optional[int] = None


@dataclass
class WandbConfig:
    mode: str = choice("offline", WANDB_MODES)  # WANDB_MODE in the environment wins
    project: str = "study"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    job_type: str = "train"


@dataclass
class Config:
    run_name: Optional[str] = None  # default: <backbone>-<attention>-<pooling>-s<seed>-<time>
    output_dir: str = "runs"
    seed: int = 0
    save_model: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


# ---------------------------------------------------------------- schema walking


def _schema_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def schema_node(key: str, schema: type = Config) -> dataclasses.Field:
    """The schema field for a dotted key; ConfigError (with suggestions) if unknown."""
    cls, parts = schema, key.split(".")
    for i, part in enumerate(parts):
        known = _schema_fields(cls)
        if part not in known:
            prefix = ".".join(parts[:i])
            valid = sorted(f"{prefix}.{k}" if prefix else k for k in known)
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}'.{hint} Valid keys here: {', '.join(valid)}")
        f = known[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(f.default_factory() if callable(f.default_factory) else None):
                raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' has no sub-keys (got '{key}')")
            cls = type(f.default_factory())
    return f


def all_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the schema, dotted."""
    keys = []
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        default = f.default_factory() if callable(f.default_factory) else None
        if dataclasses.is_dataclass(default):
            keys += all_keys(type(default), name + ".")
        else:
            keys.append(name)
    return keys


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, DictConfig):
        out = []
        for k in node.keys():
            child = node._get_node(k)
            key = f"{prefix}{k}"
            if isinstance(child, DictConfig):
                out += _flat_keys(child, key + ".") or [key]
            else:
                out.append(key)
        return out
    return []


def _check_keys(layer: DictConfig, where: str, schema: type = Config) -> None:
    for key in _flat_keys(layer):
        try:
            schema_node(key, schema)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


# ---------------------------------------------------------------- loading


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override '{bad[0]}' is not of the form key=value (e.g. model.attention=causal)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"could not parse overrides {list(overrides)}: {e}") from None


def load_yaml(path: str | Path, what: str) -> DictConfig | ListConfig:
    """A YAML file; ConfigError naming the file and the line when it does not parse."""
    import yaml

    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what} '{path}' is not valid YAML{where}: {problem}") from None
    except (OmegaConfBaseException, UnicodeDecodeError, IsADirectoryError) as e:
        raise ConfigError(f"{what} '{path}' could not be read: {str(e).splitlines()[0]}") from None


def load_structured(schema: type, config_file: str | Path | None = None,
                    overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The one config mechanism (runs, pretraining, probes): a dataclass schema's defaults <- YAML file <-
    key=value overrides. Unknown keys, wrong types and values outside a field's `choices` are ConfigError;
    each schema's own validation (ranges, combinations) runs after."""
    layers = [OmegaConf.structured(schema)]
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config '{config_file}' does not exist")
        layer = load_yaml(path, "--config")
        if not isinstance(layer, DictConfig):
            raise ConfigError(f"--config '{config_file}' must hold a mapping of config keys")
        _check_keys(layer, f"in {config_file}", schema)
        layers.append(layer)
    if overrides:
        layer = parse_overrides(overrides)
        _check_keys(layer, "override", schema)
        layers.append(layer)
    try:
        cfg = OmegaConf.merge(*layers)
    except OmegaConfBaseException as e:
        raise ConfigError(_type_error_message(e, schema)) from None
    check_choices(cfg, schema)
    return cfg


def structured_mapping(schema: type, raw: dict, where: str) -> DictConfig:
    """A mapping read by its own loader (a sweep file) through the same schema checks as `load_structured`:
    unknown keys (not below fields typed Any), wrong types and values outside `choices` are ConfigError, each
    message starting with `where`."""
    _check_mapping(raw, schema, where)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), raw)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {_type_error_message(e, schema)}") from None
    try:
        check_choices(cfg, schema)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def _check_mapping(raw: Any, schema: type, where: str, prefix: str = "") -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {raw!r}")
    known = _schema_fields(schema)
    for key, value in raw.items():
        if key not in known:
            inside = f"in {prefix[:-1]}: " if prefix else ""
            raise ConfigError(f"{where}: unknown key {inside}{key!r}; valid keys: {', '.join(known)}")
        default = known[key].default_factory() if callable(known[key].default_factory) else None
        if dataclasses.is_dataclass(default) and value is not None:
            _check_mapping(value, type(default), where, f"{prefix}{key}.")


def load_config(
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    validate_backbone: bool = True,
) -> DictConfig:
    """Build the validated config. Raises ConfigError before anything heavy happens."""
    cfg = load_structured(Config, config_file, overrides)
    validate(cfg, validate_backbone=validate_backbone)
    return cfg


def _type_error_message(e: OmegaConfBaseException, schema: type = Config) -> str:
    key = getattr(e, "full_key", None)
    value = getattr(e, "value", None)
    if not key:  # a scalar given for a group of keys (model.lora=3): OmegaConf names neither
        return f"wrong type: {str(e).splitlines()[0]} (a group of config keys needs sub-keys, e.g. model.lora.r=16)"
    item = re.search(r"\[\d+\]$", key)
    try:
        f = schema_node(re.sub(r"\[\d+\]$", "", key), schema)
        expected = getattr(f.type, "__name__", None) or str(f.type)
        if item:
            expected = f"every item of {expected}"
    except ConfigError:
        expected = "see the schema in study/config.py"
    return f"{key}={value!r} has the wrong type: expected {expected}"


def check_choices(cfg: DictConfig, schema: type = Config, prefix: str = "") -> None:
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if callable(f.default_factory) else None
        if dataclasses.is_dataclass(default):
            check_choices(cfg, type(default), key + ".")
        elif "choices" in f.metadata:
            value = OmegaConf.select(cfg, key)
            if value not in f.metadata["choices"]:
                raise ConfigError(
                    f"{key}={value!r} is not valid; choose one of: {', '.join(f.metadata['choices'])}"
                )


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None or value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r} must be {need}")


def validate(cfg: DictConfig, validate_backbone: bool = True) -> None:
    check_choices(cfg)  # again: a config changed after loading (sweep cells, study eval) is checked whole
    for key in ("loss.temperature", "optim.lr", "trainer.max_steps", "trainer.batch_size", "model.max_length",
                "eval.num_queries", "eval.num_docs", "eval.batch_tokens", "eval.depth_buckets",
                "trainer.accumulate_grad_batches", "trainer.num_nodes", "data.num_pairs",
                "trainer.val_check_interval", "trainer.log_every_n_steps", "model.latent_attention.num_heads",
                "model.latent_attention.num_latents", "model.lora.alpha"):
        _positive(cfg, key)
    for key in ("model.lora.r", "optim.warmup_steps", "data.hard_negatives", "optim.weight_decay",
                "data.num_val_pairs", "trainer.num_workers", "trainer.gradient_clip_val"):
        _positive(cfg, key, allow_zero=True)
    if not 0 <= cfg.model.lora.dropout < 1:
        raise ConfigError(f"model.lora.dropout={cfg.model.lora.dropout!r} must be in [0, 1)")
    if cfg.data.doc_min_words > cfg.data.doc_max_words or cfg.data.doc_min_words < 8:
        raise ConfigError(
            f"data.doc_min_words={cfg.data.doc_min_words} must be >= 8 and <= data.doc_max_words={cfg.data.doc_max_words}"
        )
    if cfg.eval.num_queries > cfg.eval.num_docs:
        raise ConfigError(f"eval.num_queries={cfg.eval.num_queries} must be <= eval.num_docs={cfg.eval.num_docs}")
    for key in ("seed", "eval.seed"):
        value = OmegaConf.select(cfg, key)
        if not 0 <= value < 2**32:
            raise ConfigError(f"{key}={value!r} must be in [0, 2**32) (a random seed)")
    if not cfg.eval.lengths:
        raise ConfigError("eval.lengths=[] is empty: give at least one document length in tokens, e.g. [256, 1024]")
    bad_lengths = [n for n in cfg.eval.lengths if n < 64]
    if bad_lengths:
        raise ConfigError(f"eval.lengths={list(cfg.eval.lengths)}: every length must be >= 64 tokens (got {bad_lengths[0]})")
    if cfg.eval.max_length is not None and cfg.eval.max_length < 16:
        raise ConfigError(f"eval.max_length={cfg.eval.max_length} must be >= 16 or null")
    if cfg.run_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", cfg.run_name):
        raise ConfigError(
            f"run_name={cfg.run_name!r} may hold only letters, digits and . _ + - (it names a folder)"
        )
    if cfg.trainer.strategy == "fsdp" and cfg.trainer.accelerator == "cpu":
        raise ConfigError("trainer.strategy='fsdp' needs GPUs (Lightning's FSDP refuses accelerator='cpu'); "
                          "on CPUs choose one of: auto, ddp")
    _check_encoding(cfg)
    if cfg.model.pooling == "latent_attention" and cfg.model.latent_attention.num_latents < 1:
        raise ConfigError("model.latent_attention.num_latents must be >= 1")
    # Late imports keep `study --help` fast and avoid import cycles.

    check_task_names(list(cfg.eval.tasks))
    if validate_backbone:

        check_backbone_name(cfg.model.backbone)


def _check_encoding(cfg: DictConfig) -> None:
    """model.encoding, model.chunk.* and model.pooling=mask_tokens (model.mask_tokens) agree."""
    m = cfg.model
    if m.pooling in BIDIRECTIONAL_ONLY_POOLINGS and m.attention != "bidirectional":
        valid = ", ".join(p for p in POOLINGS if p not in BIDIRECTIONAL_ONLY_POOLINGS)
        raise ConfigError(
            f"model.pooling={m.pooling!r} is defined for model.attention='bidirectional' only (under "
            f"model.attention={m.attention!r} the text never sees the appended mask tokens); use "
            f"model.attention=bidirectional, or with causal attention choose model.pooling from: {valid}")
    if m.pooling == "mask_tokens" and not 1 <= m.mask_tokens <= 64:
        raise ConfigError(f"model.mask_tokens={m.mask_tokens!r} must be between 1 and 64")
    if m.encoding == "chunked":
        if m.chunk.length < 8:
            raise ConfigError(f"model.chunk.length={m.chunk.length!r} must be >= 8 tokens")
        if not 0 <= m.chunk.overlap < m.chunk.length:
            raise ConfigError(f"model.chunk.overlap={m.chunk.overlap!r} must be >= 0 and < "
                              f"model.chunk.length={m.chunk.length}")


def to_container(cfg: DictConfig | ListConfig) -> Any:
    return OmegaConf.to_container(cfg, resolve=True)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """{'model.attention': 'causal', ...}: the names used in W&B and the results table."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(to_container(cfg), "")
    return out


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)
