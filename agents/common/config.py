"""Typed run configs: YAML in, validated dataclasses out.

Every error names the dotted key, the value it got and what is allowed, so a
typo in a config fails at load time, not an hour into training.

This module knows no domain: what a config may name (problem families, agent
kinds, env ids, and which go together) comes in a ``ConfigSchema`` that each
domain contributes to and ``agents.registry`` merges.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from learned_optimizers.common.files import atomic_write
from learned_optimizers.common.multistart import MultistartAdamSettings
from learned_optimizers.common.networks import ACTIVATIONS
from learned_optimizers.common.settings import SettingsError, check_value, setting


#: what ``device`` may say: 'auto' (cuda when there is one), 'cpu', 'cuda' or one GPU 'cuda:N'
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


def device_argument(text: str) -> str:
    """argparse type of ``--device``: the same values as the config's ``device``."""
    import argparse
    import re

    if not re.fullmatch(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: auto, cpu, cuda or cuda:N")
    return text


class ConfigError(ValueError):
    """A config is malformed; the message names the key and what is allowed."""


# ---------------------------------------------------------------- sections
@dataclass
class TrainSettings:
    total_steps: int = setting(2000, ge=1, doc="gradient steps (objective, regression) or env steps (RL)")
    checkpoint_every: int = setting(500, ge=1, doc="steps between checkpoints")
    log_every: int = setting(50, ge=1, doc="steps between TensorBoard scalars")
    eval_every: int = setting(500, ge=1, doc="steps between held-out evaluations logged to TensorBoard")
    checkpoint_replay_buffer: bool = setting(True, choices=(True, False),
                                             doc="off-policy RL: keep the replay buffer in checkpoints (a resumed run "
                                                 "then samples the same transitions; a 1M-step MuJoCo buffer is GBs)")
    keep_snapshots: bool = setting(False, choices=(True, False),
                                   doc="SB3 runs: keep each checkpoint's model (weights, no buffer) as "
                                       "snapshots/model-<step>.zip, e.g. for the amortization gap across training")


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
    hidden_sizes: tuple[int, ...] = setting((128, 128), ge=1, le=65_536)
    activation: str = setting("relu", choices=tuple(ACTIVATIONS))
    learning_rate: float = setting(1e-3, gt=0.0)
    batch_size: int = setting(256, ge=1, le=1_048_576, doc="contexts per gradient step (the env's num_envs)")
    lr_schedule: str = setting("constant", choices=("constant", "cosine"),
                               doc="cosine: decay the learning rate to 0 over train.total_steps (a function of the "
                                   "step, so a resumed run continues the same curve)")


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
    batch_size: int = setting(256, ge=1, le=1_048_576)
    buffer_size: int = setting(100_000, ge=1)
    learning_starts: int = setting(1000, ge=0)
    net_arch: tuple[int, ...] = setting((64, 64), ge=1, le=65_536)
    n_envs: int = setting(1, ge=1, le=4096, doc="batched env copies stepped together")
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
    batch_size: int = setting(64, ge=2, le=1_048_576)
    n_epochs: int = setting(10, ge=1)
    net_arch: tuple[int, ...] = setting((64, 64), ge=1, le=65_536)
    n_envs: int = setting(8, ge=1, le=4096)
    gamma: float = setting(0.99, ge=0.0, le=1.0)
    ent_coef: float = setting(0.0, ge=0.0)


@dataclass
class RunConfig:
    name: str = setting("", doc="default run name (the CLI's --name wins)")
    seed: int = setting(0, ge=0)
    device: str = setting("auto", pattern=DEVICE_PATTERN, allowed="auto, cpu, cuda or cuda:N")
    env: str = setting("amortize/Sphere-v0", doc="an env id of the problem family's domain (``amortize list``)")
    problem: Any = None  # the family's settings dataclass, chosen by problem.family
    agent: Any = None  # the agent kind's settings dataclass, chosen by agent.kind
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    solver: MultistartAdamSettings = field(default_factory=MultistartAdamSettings)
    #: the name behind ``problem`` (written to YAML as problem.family, not as a key of its own)
    problem_family: str = field(default="sphere", compare=False)
    #: the family's problem class (from the schema; not written to YAML)
    problem_class: Any = field(default=None, compare=False, repr=False)

    def problem_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self.problem)

    def make_problem(self) -> Any:
        """The configured problem family, built from its settings."""
        return self.problem_class(self.problem)


@dataclass(frozen=True)
class DomainRules:
    """One domain's part of a schema: its families train on its envs with its agent kinds, and only there."""

    name: str
    families: tuple[str, ...]
    env_ids: tuple[str, ...]
    agent_kinds: tuple[str, ...]
    #: whether agent.vec_env=subproc applies (Gymnasium envs stepped one per process; batched torch envs are not)
    subprocess_envs: bool = False


@dataclass(frozen=True)
class ConfigSchema:
    """What a config may name: problem families, agent kinds (with their settings classes) and env ids."""

    families: Mapping[str, tuple[type, type]]  # family -> (problem class, settings class)
    agent_kinds: Mapping[str, type]  # kind -> settings class
    rules: tuple[DomainRules, ...]
    default_family: str

    def rules_for(self, family: str) -> DomainRules:
        return next(r for r in self.rules if family in r.families)

    @property
    def env_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for r in self.rules for e in r.env_ids))

    @classmethod
    def merge(cls, parts: list["ConfigSchema"], default_family: str) -> "ConfigSchema":
        """One schema from several domains'; a family or env id in two domains, or one agent kind with two
        settings classes, is a programming error."""
        families: dict[str, tuple[type, type]] = {}
        kinds: dict[str, type] = {}
        for part in parts:
            for name, entry in part.families.items():
                if name in families:
                    raise ValueError(f"problem family {name!r} is registered by two domains")
                families[name] = entry
            for kind, settings_cls in part.agent_kinds.items():
                if kinds.setdefault(kind, settings_cls) is not settings_cls:
                    raise ValueError(f"agent kind {kind!r} has two settings classes")
        rules = tuple(r for part in parts for r in part.rules)
        envs = [e for r in rules for e in r.env_ids]
        if len(envs) != len(set(envs)):
            raise ValueError("an env id is registered by two domains")
        return cls(families, kinds, rules, default_family)


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


def _section(data: Any, key: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {data!r}")
    return dict(data)


def _choice(section: dict[str, Any], key: str, selector: str, allowed: Mapping[str, Any], default: str) -> str:
    choice = section.pop(selector, default)
    if choice not in allowed:
        raise ConfigError(f"{key}.{selector}={choice!r} is not allowed; allowed: {', '.join(sorted(allowed))}")
    return choice


def config_from_dict(raw: Any, schema: ConfigSchema) -> RunConfig:
    """A validated ``RunConfig``: the problem family picks its domain, whose envs and agent kinds the rest must name."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    for internal in ("problem_family", "problem_class"):
        if internal in raw:
            raise ConfigError(f"{internal}: unknown key; the family is problem.family")
    problem_raw = _section(raw.pop("problem", None), "problem")
    family = _choice(problem_raw, "problem", "family", schema.families, schema.default_family)
    rules = schema.rules_for(family)
    agent_raw = _section(raw.pop("agent", None), "agent")
    kind = agent_raw.get("kind", rules.agent_kinds[0])
    if kind not in schema.agent_kinds:
        raise ConfigError(f"agent.kind={kind!r} is not allowed; allowed: {', '.join(sorted(schema.agent_kinds))}")
    problem = parse_dataclass(schema.families[family][1], problem_raw, "problem", what=f" for family {family!r}")
    agent = parse_dataclass(schema.agent_kinds[kind], agent_raw, "agent", what=f" for kind {kind!r}")
    config = parse_dataclass(RunConfig, raw, "")
    config.problem, config.agent, config.problem_family = problem, agent, family
    config.problem_class = schema.families[family][0]
    if config.env not in schema.env_ids:
        raise ConfigError(f"env={config.env!r} is not allowed; allowed: {', '.join(schema.env_ids)}")
    if config.env not in rules.env_ids:
        env_text = f"env={rules.env_ids[0]}" if len(rules.env_ids) == 1 else f"env one of {', '.join(rules.env_ids)}"
        raise ConfigError(f"problem.family={family!r} and env={config.env!r}: the {rules.name} families "
                          f"({', '.join(rules.families)}) go with {env_text} and only there")
    if kind not in rules.agent_kinds:
        homes = [e for r in schema.rules if kind in r.agent_kinds for e in r.env_ids]
        hint = f"; agent.kind={kind!r} needs env={' or env='.join(homes)}" if homes else ""
        raise ConfigError(f"agent.kind={kind!r} cannot train on {config.env}; "
                          f"allowed: {', '.join(rules.agent_kinds)}{hint}")
    if getattr(config.agent, "vec_env", "dummy") != "dummy" and not rules.subprocess_envs:
        subproc = [e for r in schema.rules if r.subprocess_envs for e in r.env_ids]
        raise ConfigError(f"agent.vec_env={config.agent.vec_env!r} applies to control envs only ({', '.join(subproc)}); "
                          f"env={config.env!r} is batched in one torch tensor: leave agent.vec_env=dummy")
    if config.eval.seed == config.seed:
        raise ConfigError(
            f"eval.seed={config.eval.seed} equals seed: held-out contexts must never share the training seed"
        )
    return config


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain data for YAML, with the dispatch keys written out."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    out = plain(dataclasses.asdict(config))
    out.pop("problem_family")
    out.pop("problem_class")
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
        try:
            node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value {text!r} is not valid YAML "
                              f"({str(err).splitlines()[0]}); quote strings, e.g. agent.net_arch=[64,64]") from None
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
        raise ConfigError(f"config file {str(path)!r} is empty: it needs at least problem.family and agent.kind "
                          "(see configs/ for examples)")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path, schema: ConfigSchema, overrides: list[str] | None = None) -> RunConfig:
    return config_from_dict(apply_overrides(read_yaml(path), overrides or []), schema)


def dump_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config into a temporary file renamed into place: a crash never leaves half of it."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))
