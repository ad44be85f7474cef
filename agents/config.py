"""Typed run configs: YAML in, validated dataclasses out.

Every error names the dotted key, the value it got and what is allowed, so a
typo in a config fails at load time, not an hour into training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from envs import ENV_IDS
from envs.control import CONTROL_ENV_IDS
from learned_optimizers.classical import MultistartAdamSettings
from learned_optimizers.models import ACTIVATIONS
from learned_optimizers.problems import PROBLEM_FAMILIES
from learned_optimizers.problems.fixed_point import FIXED_POINT_FAMILIES
from learned_optimizers.problems.training_tasks import TRAINING_TASK_FAMILIES
from learned_optimizers.settings import SettingsError, check_value, setting


class ConfigError(ValueError):
    """A config is malformed; the message names the key and what is allowed."""


# ---------------------------------------------------------------- sections
@dataclass
class TrainSettings:
    total_steps: int = setting(2000, ge=1, doc="gradient steps (objective, regression) or env steps (RL)")
    checkpoint_every: int = setting(500, ge=1, doc="steps between checkpoints")
    log_every: int = setting(50, ge=1, doc="steps between TensorBoard scalars")
    eval_every: int = setting(500, ge=1, doc="steps between held-out evaluations logged to TensorBoard")


@dataclass
class EvalSettings:
    contexts: int = setting(512, ge=1, doc="held-out contexts for model-vs-solver comparison")
    seed: int = setting(1_000_003, ge=0, doc="seed of held-out contexts; must differ from the run seed")
    episodes: int = setting(100, ge=1, doc="Gymnasium episodes run by `amortize eval`")
    timing_repeats: int = setting(20, ge=1, doc="repetitions when timing a model's forward pass")
    training_episodes: int = setting(5, ge=1, doc="deterministic episodes per periodic evaluation during training (control envs)")


@dataclass
class ObjectiveAgentSettings:
    """L_obj: train the model by differentiating f through the env."""

    kind: str = setting("objective", choices=("objective",))
    hidden_sizes: tuple[int, ...] = setting((128, 128), ge=1)
    activation: str = setting("relu", choices=tuple(ACTIVATIONS))
    learning_rate: float = setting(1e-3, gt=0.0)
    batch_size: int = setting(256, ge=1, doc="contexts per gradient step (the env's num_envs)")


@dataclass
class RegressionAgentSettings(ObjectiveAgentSettings):
    """L_reg: regress the model onto solver optima y*(x); same network settings as L_obj."""

    kind: str = setting("regression", choices=("regression",))
    dataset_size: int = setting(4096, ge=1, doc="training contexts labelled once by the solver")


OFF_POLICY_ALGORITHMS = ("sac", "td3", "ddpg")


@dataclass
class OffPolicyAgentSettings:
    """L^RL with a stable-baselines3 off-policy algorithm."""

    kind: str = setting("sac", choices=OFF_POLICY_ALGORITHMS)
    learning_rate: float = setting(3e-4, gt=0.0)
    batch_size: int = setting(256, ge=1)
    buffer_size: int = setting(100_000, ge=1)
    learning_starts: int = setting(1000, ge=0)
    net_arch: tuple[int, ...] = setting((64, 64), ge=1)
    n_envs: int = setting(1, ge=1, doc="batched env copies stepped together")
    vec_env: str = setting("dummy", choices=("dummy", "subproc"),
                           doc="control envs only: step the n_envs copies in this process or one process each")
    train_freq: int = setting(1, ge=1)
    gradient_steps: int = setting(1, ge=1)
    gamma: float = setting(0.99, ge=0.0, le=1.0)
    tau: float = setting(0.005, gt=0.0, le=1.0)
    action_noise: float = setting(0.1, ge=0.0, doc="Gaussian exploration noise std (td3, ddpg)")


@dataclass
class PPOAgentSettings:
    """L^RL with stable-baselines3 PPO."""

    kind: str = setting("ppo", choices=("ppo",))
    learning_rate: float = setting(3e-4, gt=0.0)
    n_steps: int = setting(256, ge=1, doc="steps per env per rollout")
    batch_size: int = setting(64, ge=2)
    n_epochs: int = setting(10, ge=1)
    net_arch: tuple[int, ...] = setting((64, 64), ge=1)
    n_envs: int = setting(8, ge=1)
    gamma: float = setting(0.99, ge=0.0, le=1.0)
    ent_coef: float = setting(0.0, ge=0.0)


@dataclass
class RLQPAgentSettings:
    """RLQP's TD3: a shared per-constraint actor and twin critics, trained on per-row transitions."""

    kind: str = setting("rlqp_td3", choices=("rlqp_td3",))
    hidden_sizes: tuple[int, ...] = setting((48, 48, 48), ge=1)
    actor_learning_rate: float = setting(1e-4, gt=0.0)
    critic_learning_rate: float = setting(1e-3, gt=0.0)
    num_envs: int = setting(16, ge=1, doc="QPs advancing together in the batched env")
    batch_size: int = setting(1024, ge=1, doc="row transitions per gradient step")
    buffer_size: int = setting(500_000, ge=1, doc="row transitions kept")
    rows_per_problem: int = setting(64, ge=1, doc="row transitions stored per problem and env step, at most")
    learning_starts: int = setting(20, ge=0, doc="env steps before the first update")
    gradient_steps: int = setting(8, ge=1, doc="updates per env step")
    gamma: float = setting(0.95, ge=0.0, le=1.0)
    tau: float = setting(0.005, gt=0.0, le=1.0)
    policy_delay: int = setting(2, ge=1)
    exploration_noise: float = setting(0.5, ge=0.0, doc="Gaussian noise std on log10 rho while acting")
    target_noise: float = setting(0.2, ge=0.0, doc="target policy smoothing std (log10 rho)")
    target_noise_clip: float = setting(0.5, ge=0.0)
    eval_problems_per_size: int = setting(2, ge=1, doc="held-out problems per (class, size) logged during training")


@dataclass
class FixedPointObjectiveSettings(ObjectiveAgentSettings):
    """NeuralFP's loss: backpropagate the residuals through K unrolled steps of the fixed-point env.

    The network settings are the gradient amortizers'; only the defaults differ.
    """

    kind: str = setting("fp_objective", choices=("fp_objective",))
    hidden_sizes: tuple[int, ...] = setting((256, 256), ge=1)
    batch_size: int = setting(128, ge=1, doc="contexts per gradient step (the env's num_envs)")
    learn_init: bool = setting(True, doc="learn the initial iterate y_0(x) as well as the update")
    loss: str = setting("log_ratio", choices=("log_ratio", "ratio"),
                        doc="log_ratio: mean log10 residual ratio over the unroll; ratio: NeuralFP's sum of ratios")
    grad_clip: float = setting(1.0, gt=0.0, doc="max gradient norm")


@dataclass
class FixedPointRegressionSettings(FixedPointObjectiveSettings):
    """HyperAnderson's loss: distance of every unrolled iterate to y*(x) from a converged solve."""

    kind: str = setting("fp_regression", choices=("fp_regression",))
    dataset_size: int = setting(4096, ge=1, doc="training contexts labelled once with y*(x)")


@dataclass
class L2OObjectiveSettings(ObjectiveAgentSettings):
    """Andrychowicz et al.'s loss: backpropagate the objective through (truncated) unrolls of the learned optimizer."""

    kind: str = setting("l2o_objective", choices=("l2o_objective",))
    hidden_sizes: tuple[int, ...] = setting((32, 32), ge=1, doc="the per-coordinate network's hidden layers")
    learning_rate: float = setting(3e-3, gt=0.0)
    batch_size: int = setting(64, ge=1, doc="tasks per unroll (the env's num_envs)")
    truncation: int = setting(0, ge=0, doc="steps per truncated unroll, one gradient step each; 0 = the whole horizon")
    loss: str = setting("log_ratio", choices=("log_ratio", "ratio", "log_gap"),
                        doc="log_ratio: mean log10 f_t / f_0 over the unroll; ratio: mean f_t / f_0 (Li & Malik's summed cost); "
                            "log_gap: mean log10 (f_t - f_ref) / (f_0 - f_ref), f_ref = tuned Adam's best in 2 horizons on the same tasks")
    second_order: bool = setting(False, doc="differentiate through the gradients too (double backprop); "
                                             "false: Andrychowicz et al.'s first-order approximation")
    grad_clip: float = setting(1.0, gt=0.0, doc="max gradient norm")


FIXED_POINT_ENV = "amortize/FixedPoint-v0"
L2O_ENV = "amortize/LearnToOptimize-v0"
#: agent kinds that train on the learning-to-optimize env (the SB3 ones with the coordinatewise policy)
L2O_AGENTS = ("l2o_objective", "td3", "ddpg")
#: agent kinds that train on the fixed-point env
FIXED_POINT_AGENTS = ("fp_objective", "fp_regression", *OFF_POLICY_ALGORITHMS)
#: the problem family of control runs: max_u Q(x, u) with the agent's own critic
CONTROL_FAMILY = "max_q"

AGENT_KINDS: dict[str, type] = {
    "objective": ObjectiveAgentSettings,
    "regression": RegressionAgentSettings,
    **{k: OffPolicyAgentSettings for k in OFF_POLICY_ALGORITHMS},
    "ppo": PPOAgentSettings,
    "rlqp_td3": RLQPAgentSettings,
    "fp_objective": FixedPointObjectiveSettings,
    "fp_regression": FixedPointRegressionSettings,
    "l2o_objective": L2OObjectiveSettings,
}


@dataclass
class RunConfig:
    name: str = setting("", doc="default run name (the CLI's --name wins)")
    seed: int = setting(0, ge=0)
    device: str = setting("auto", choices=("auto", "cpu", "cuda"))
    env: str = setting("amortize/Sphere-v0", choices=(*ENV_IDS, *CONTROL_ENV_IDS))
    problem: Any = None  # the family's settings dataclass, chosen by problem.family
    agent: Any = None  # one of AGENT_KINDS, chosen by agent.kind
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    solver: MultistartAdamSettings = field(default_factory=MultistartAdamSettings)

    @property
    def problem_family(self) -> str:
        return _FAMILY_OF[type(self.problem)]

    def problem_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self.problem)


_FAMILY_OF = {settings_cls: family for family, (_, settings_cls) in PROBLEM_FAMILIES.items()}


# ---------------------------------------------------------------- parsing
def _type_name(tp: Any) -> str:
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is tuple:
        elem = typing.get_args(tp)[0]
        return {int: "a list of integers", float: "a list of numbers", str: "a list of strings"}.get(elem, "a list")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")

    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        (elem,) = typing.get_args(tp)[:1]
        return tuple(_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, key)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{key}: union types are not supported by the config loader")
    raise TypeError(f"{key}: unsupported annotation {tp!r}")


def parse_dataclass(cls: type, data: Any, key: str, what: str = "") -> Any:
    """Build ``cls`` from a mapping, naming the offending key on any error."""
    label = key or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key{what}; allowed keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        coerced = _coerce(value, hints[name], sub)
        try:
            check_value(sub, coerced, fields[name])
        except SettingsError as err:
            raise ConfigError(str(err)) from None
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except SettingsError as err:  # a settings class's own cross-field checks
        raise ConfigError(f"{label}: {err}") from None


def _parse_dispatched(data: Any, key: str, selector: str, table: Mapping[str, type], default: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {data!r}")
    choice = data.get(selector, default)
    if choice not in table:
        raise ConfigError(f"{key}.{selector}={choice!r} is not allowed; allowed: {', '.join(sorted(table))}")
    rest = dict(data)
    if table is PROBLEM_FAMILIES:
        rest.pop(selector, None)
        return parse_dataclass(table[choice][1], rest, key, what=f" for {selector} {choice!r}")
    return parse_dataclass(table[choice], rest, key, what=f" for {selector} {choice!r}")


def config_from_dict(raw: Any) -> RunConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    problem = _parse_dispatched(raw.pop("problem", None), "problem", "family", PROBLEM_FAMILIES, "sphere")
    agent = _parse_dispatched(raw.pop("agent", None), "agent", "kind", AGENT_KINDS, "objective")
    config = parse_dataclass(RunConfig, raw, "")
    config.problem, config.agent = problem, agent
    rlqp_env = config.env.startswith("amortize/QP-RLQP")
    if (config.agent.kind == "rlqp_td3") != (config.problem_family == "qp") or (config.problem_family == "qp") != rlqp_env:
        raise ConfigError(
            f"agent.kind={config.agent.kind!r}, problem.family={config.problem_family!r}, env={config.env!r}: "
            "RLQP needs all three of agent.kind=rlqp_td3, problem.family=qp and env=amortize/QP-RLQP-v0"
        )
    _check_pairing(config, TRAINING_TASK_FAMILIES, "the training-task families", L2O_ENV, L2O_AGENTS, "l2o_")
    _check_pairing(config, FIXED_POINT_FAMILIES, "the fixed-point families", FIXED_POINT_ENV, FIXED_POINT_AGENTS, "fp_")
    _check_pairing(config, {CONTROL_FAMILY: None}, "control", tuple(CONTROL_ENV_IDS), OFF_POLICY_ALGORITHMS, "")
    if config.agent.kind in OFF_POLICY_ALGORITHMS and config.agent.vec_env != "dummy" and config.env not in CONTROL_ENV_IDS:
        raise ConfigError(f"agent.vec_env={config.agent.vec_env!r} applies to control envs only ({', '.join(CONTROL_ENV_IDS)}); "
                          f"env={config.env!r} is batched in one torch tensor: leave agent.vec_env=dummy")
    if config.eval.seed == config.seed:
        raise ConfigError(
            f"eval.seed={config.eval.seed} equals seed: held-out contexts must never share the training seed"
        )
    return config


def _check_pairing(config: RunConfig, families: Mapping[str, Any], what: str, env: str | tuple[str, ...],
                   agents: tuple[str, ...], agent_prefix: str) -> None:
    """A group of families trains on its env(s), with the agent kinds listed for it (and its own kinds only there)."""
    envs = (env,) if isinstance(env, str) else env
    env_text = f"env={env}" if isinstance(env, str) else f"env one of {', '.join(envs)}"
    member = config.problem_family in families
    if member != (config.env in envs):
        raise ConfigError(f"problem.family={config.problem_family!r} and env={config.env!r}: {what} "
                          f"({', '.join(families)}) go with {env_text} and only there")
    if member and config.agent.kind not in agents:
        raise ConfigError(f"agent.kind={config.agent.kind!r} cannot train on {config.env}; allowed: {', '.join(agents)}")
    if not member and agent_prefix and config.agent.kind.startswith(agent_prefix):
        raise ConfigError(f"agent.kind={config.agent.kind!r} needs {env_text}")


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain data for YAML, with the dispatch keys written out."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    out = plain(dataclasses.asdict(config))
    out["problem"] = {"family": config.problem_family, **out["problem"]}
    return out


# ---------------------------------------------------------------- files and overrides
def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys from ``key=value`` strings; values are read as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. agent.learning_rate=1e-4")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key segment in {dotted!r}")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    return config_from_dict(apply_overrides(read_yaml(path), overrides or []))


def dump_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
