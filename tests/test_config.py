"""Config loading: every error names the key, the value and what is allowed."""

from pathlib import Path

import pytest
import yaml

from agents.common.config import ConfigError, apply_overrides, config_to_dict
from agents.registry import config_from_dict, load_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.train.total_steps >= 1


def test_shipped_configs_exist():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"agent": {"kind": "objective", "lr": 1e-3}}, r"agent\.lr: unknown key for kind 'objective'; allowed keys: .*learning_rate"),
        ({"trian": {}}, r"trian: unknown key; allowed keys: .*train"),
        ({"train": {"total_steps": "many"}}, r"train\.total_steps: expected an integer, got 'many' \(str\)"),
        ({"train": {"total_steps": 2.5}}, r"train\.total_steps: expected an integer, got 2\.5"),
        ({"agent": {"learning_rate": [1]}}, r"agent\.learning_rate: expected a number"),
        ({"agent": {"learning_rate": 0}}, r"agent\.learning_rate=0\.0 is out of range; allowed: a value > 0"),
        ({"agent": {"kind": "a2c"}}, r"agent\.kind='a2c' is not allowed; allowed: ddpg, fp_objective, fp_regression, l2o_objective, objective, ppo, regression, rlqp_td3, sac, td3"),
        ({"device": "tpu"}, r"device='tpu' is not allowed; allowed: auto, cpu, cuda or cuda:N"),
        ({"env": "CartPole-v1"}, r"env='CartPole-v1' is not allowed"),
        ({"problem": {"family": "torus"}}, r"problem\.family='torus' is not allowed; allowed: deq, ista, logreg, max_q, mlp, ot-digits, ot-gaussians, qp, qp_warm_start, quadratic, robust, scs-huber, scs-lasso, scs-socp, sinkhorn-digits, sinkhorn-gaussians, sphere"),
        ({"problem": {"gamma": -1}}, r"problem\.gamma=-1\.0 is out of range; allowed: a value >= 0"),
        ({"agent": {"kind": "sac", "gamma": 1.5}}, r"agent\.gamma=1\.5 is out of range; allowed: a value >= 0 and <= 1"),
        ({"agent": {"hidden_sizes": [64, 0]}}, r"agent\.hidden_sizes=\(64, 0\) is out of range"),
        ({"agent": {"hidden_sizes": 64}}, r"agent\.hidden_sizes: expected a list of integers"),
        ({"seed": 5, "eval": {"seed": 5}}, r"eval\.seed=5 equals seed"),
        ({"train": 3}, r"train: expected a mapping"),
    ],
)
def test_bad_configs_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_defaults_fill_in_and_round_trip():
    config = config_from_dict({"agent": {"kind": "td3"}, "problem": {"gamma": 0.1}})
    assert config.agent.action_noise == 0.1 and config.problem.gamma == 0.1 and config.problem.n_components == 4
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(config))))
    assert again == config


def test_yaml_exponent_without_dot_is_a_float():
    # YAML 1.1 reads 1e-4 as a string; the loader accepts it for a float field
    assert config_from_dict({"agent": {"learning_rate": "1e-4"}}).agent.learning_rate == 1e-4


def test_overrides_use_dotted_paths_and_yaml_scalars(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent: {kind: objective, learning_rate: 0.001}\ntrain: {total_steps: 10}\n")
    config = load_config(path, ["agent.learning_rate=1e-4", "train.total_steps=77", "agent.hidden_sizes=[8, 8]", "problem.gamma=0"])
    assert config.agent.learning_rate == 1e-4
    assert config.train.total_steps == 77
    assert config.agent.hidden_sizes == (8, 8)
    assert config.problem.gamma == 0.0


def test_override_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["agent.learning_rate"])
    with pytest.raises(ConfigError, match="agent.kind is not a section"):
        apply_overrides({"agent": {"kind": "sac"}}, ["agent.kind.x=1"])
    with pytest.raises(ConfigError, match=r"agent\.nonsense: unknown key"):
        config_from_dict(apply_overrides({}, ["agent.nonsense=1"]))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(listy)


@pytest.mark.parametrize("section, key", [("agent", "learning_rate"), ("solver", "learning_rate"), ("problem", "beta")])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_setting_names_its_key(section, key, value):
    raw = {"agent": {"kind": "objective"}, "problem": {"family": "sphere"}}
    raw[section] = {**raw.get(section, {}), key: value}
    with pytest.raises(ConfigError, match=rf"{section}\.{key}=.*(not a finite number)"):
        config_from_dict(raw)


def test_device_takes_one_gpu_by_index_and_names_what_is_allowed():
    from agents.cli import build_parser
    from agents.common.config import ConfigError
    from agents.registry import config_from_dict

    assert config_from_dict({"device": "cuda:3", "agent": {"kind": "objective"}}).device == "cuda:3"
    with pytest.raises(ConfigError, match=r"device='gpu' is not allowed; allowed: auto, cpu, cuda or cuda:N"):
        config_from_dict({"device": "gpu", "agent": {"kind": "objective"}})
    assert build_parser().parse_args(["eval", "runs/x", "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "runs/x", "--device", "cuda:x"])
