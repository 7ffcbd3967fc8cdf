import pytest
from omegaconf import OmegaConf

from study.cli import main
from study.config import all_keys, flatten, load_config, save_config
from study.errors import ConfigError


def test_defaults_are_valid_and_follow_the_paper():
    cfg = load_config()
    assert cfg.model.attention == "bidirectional"
    assert cfg.model.pooling == "mean"
    assert cfg.loss.temperature == pytest.approx(0.02)
    assert cfg.model.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_file_then_overrides_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  attention: causal\n  pooling: last_token\nseed: 3\n")
    cfg = load_config(f, ["seed=7"])
    assert (cfg.model.attention, cfg.model.pooling, cfg.seed) == ("causal", "last_token", 7)


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("model.attention=diagonal", ["model.attention", "'diagonal'", "bidirectional, causal"]),
        ("model.pooling=max", ["model.pooling", "'max'", "mean, last_token, first_token, weighted_mean, latent_attention"]),
        ("model.atention=causal", ["unknown config key 'model.atention'", "Did you mean 'model.attention'"]),
        ("trainer.max_steps=ten", ["trainer.max_steps", "'ten'", "int"]),
        ("loss.temperature=0", ["loss.temperature=0", "> 0"]),
        ("eval.tasks=[passkey,haystack]", ["eval.tasks", "'haystack'", "needle, passkey"]),
        ("model.backbone=not-a-model", ["model.backbone='not-a-model'", "tiny-qwen2"]),
        ("run_name=../escape", ["run_name", "letters, digits"]),
        ("seed", ["'seed' is not of the form key=value"]),
    ],
)
def test_bad_values_name_key_value_and_options(override, fragments):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    for fragment in fragments:
        assert fragment in str(err.value)


def test_unknown_key_in_yaml_file_is_reported_with_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("trainer:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*trainer.max_stepz.*Did you mean 'trainer.max_steps'"):
        load_config(f)


def test_cli_exits_2_before_any_compute(capsys, tmp_path):
    code = main(["train", f"output_dir={tmp_path}", "model.attention=diagonal"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.attention='diagonal'" in err and "bidirectional, causal" in err
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["model.pooling=weighted_mean", "eval.lengths=[128,256]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


def test_flat_names_match_schema_keys():
    flat = flatten(load_config())
    assert set(flat) == set(all_keys())
    assert flat["model.attention"] == "bidirectional"


def test_cli_docstring_lists_every_subcommand():
    """The module docstring is the newcomer's command list: it must name each subcommand the parser has."""
    import re

    import study.cli
    from study.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    documented = set(re.findall(r"^    study ([a-z-]+)", study.cli.__doc__, flags=re.M))
    assert documented == set(sub.choices)
