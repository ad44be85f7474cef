"""The qp domain's runs: RLQP, a learned rho for OSQP's ADMM, trained by a per-constraint TD3; and warm starts
for the real osqp on a parametric QP family, learned by regression onto its solutions or through k unrolled
ADMM steps, or by stable-baselines3 on the one-step env."""

from __future__ import annotations

from agents.common.agent import Agent
from agents.common.config import OFF_POLICY_ALGORITHMS, ConfigError, OffPolicyAgentSettings, RunConfig
from agents.common.domain import DomainRuns
from agents.common.runs import RunDir
from agents.qp.rlqp_td3 import RLQPAgent
from agents.qp.settings import RLQPAgentSettings
from agents.qp.warm_start import WarmStartAgentSettings, WarmStartRegression
from learned_optimizers.families import PROBLEM_FAMILIES


#: agent kind -> (its problem family, its env)
HOMES = {"rlqp_td3": ("qp", ("amortize/QP-RLQP-v0", "amortize/QP-RLQP-Scalar-v0")),
         "warm_start_regression": ("qp_warm_start", ("amortize/QP-WarmStart-v0",)),
         "warm_start_objective": ("qp_warm_start", ("amortize/QP-WarmStart-v0",)),
         **{k: ("qp_warm_start", ("amortize/QP-WarmStart-v0",)) for k in OFF_POLICY_ALGORITHMS}}


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    kind = config.agent.kind
    family, envs = HOMES[kind]
    if config.problem_family != family or config.env not in envs:
        raise ConfigError(f"agent.kind={kind!r} trains on problem.family={family!r} with env={' or '.join(envs)}; "
                          f"got problem.family={config.problem_family!r}, env={config.env!r}")
    if kind in OFF_POLICY_ALGORITHMS:
        from agents.qp.warm_start_rl import WarmStartSB3

        return WarmStartSB3(config, run)
    return WarmStartRegression(config, run) if kind.startswith("warm_start_") else RLQPAgent(config, run)


RUNS = DomainRuns(
    name="qp",
    families={"qp": PROBLEM_FAMILIES["qp"], "qp_warm_start": PROBLEM_FAMILIES["qp_warm_start"]},
    env_ids=("amortize/QP-RLQP-v0", "amortize/QP-RLQP-Scalar-v0", "amortize/QP-WarmStart-v0"),
    agent_kinds={"rlqp_td3": (RLQPAgentSettings, "RLQP: batched TD3 with a shared per-constraint actor (rho per row)"),
                 "warm_start_regression": (WarmStartAgentSettings, "a warm start (x, y) for the real osqp, regressed "
                                           "onto its solutions of a parametric QP family"),
                 "warm_start_objective": (WarmStartAgentSettings, "a warm start for the real osqp, regressed, then "
                                          "trained on the residual of k ADMM steps unrolled from it"),
                 **{k: (OffPolicyAgentSettings, f"L^RL: stable-baselines3 {k.upper()} on the one-step warm-start env "
                                                "(reward: minus our core's ADMM iterations from the start)")
                    for k in OFF_POLICY_ALGORITHMS}},
    make_agent=make_agent,
)
