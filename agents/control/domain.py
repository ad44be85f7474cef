"""The control domain as the CLI sees it: eval with semi-amortized variants and video, and the max-Q gap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.common.domain import Domain
from agents.common.tables import format_table
from agents.control.evaluation import evaluate_control
from agents.control.export import export_control
from agents.control.gap import control_gap, control_gap_across_training
from agents.control.kinds import RUNS

#: the gap table's rows: these Adam iterations and the last
GAP_ROWS = (0, 10, 25, 50, 100, 200, 300, 500)


def eval_table(result: dict[str, Any]) -> str:
    rows = [[name, v["adam_steps"], v["episodes"], v["return_mean"], v.get("return_stderr"), v["return_std"], v["length_mean"],
             v.get("critic_q_mean")] for name, v in result["variants"].items()]
    return format_table(["policy", "Adam steps on Q", "episodes", "return mean", "std error", "return std", "length",
                         "critic Q mean"], rows)


def evaluate(agent: Any, episodes: int, semi_amortized: list[int] | None = None, video: bool = False) -> dict[str, Any]:
    result = evaluate_control(agent, episodes, semi_amortized, video)
    result["plots"] = []
    return result


def gap_report(r: dict[str, Any]) -> str:
    """Normalized max-Q values (zero action -1, policy 0), the speedup and the unclamped view."""
    rows = [[p["iteration"], p["seconds"], p["value_mean"], p["value_std"], p["value_mean_unclamped"], p["above_policy"]]
            for p in r["curve"] if p["iteration"] in GAP_ROWS or p is r["curve"][-1]]
    lines = [format_table(["Adam iteration", "seconds", "value (clamped)", "std", "value (unclamped)", "frac above policy"], rows),
             f"policy: one forward pass on {r['states']} states (from {r.get('episodes', 1)} episodes) in "
             f"{r['policy_seconds'] * 1e3:.3f} ms "
             f"({r['informative_states']} states where pi beats the zero action under Q)"]
    if r["speedup"] is None:
        lines.append(f"Adam never reached a mean normalized value of {r['reach_level']} in {r['adam']['iterations']} iterations")
    else:
        lines.append(f"Adam reaches {r['reach_level']} after {r['iterations_to_policy']} iterations, {r['seconds_to_policy']:.4f} s: "
                     f"speedup {r['speedup']:.0f}x")
    lines.append(f"after {r['adam']['iterations']} iterations Adam's Q is above the policy's on {r['final_above_policy']:.0%} of states; "
                 f"unclamped normalized value: mean {r['final_value_mean_unclamped']:.3g}, median {r['final_value_median_unclamped']:.3g}, "
                 f"of the mean Qs {r['final_value_of_means_unclamped']:.3g}")
    return "\n".join(lines)


def gap_across_training_report(r: dict[str, Any]) -> str:
    """One row per snapshot: Q of the actor over the zero action, where Adam ends (unclamped), time to match."""
    rows = []
    for p in r["snapshots"]:
        if "skipped" in p:
            rows.append([p["step"], p["episodes"], "-", "-", "-", "-", "-", "actor does not beat the zero action"])
            continue
        q = p["q_mean"]
        rows.append([p["step"], p["episodes"], q["policy"] - q["zero_action"], p["final_value_median_unclamped"],
                     p["final_above_policy"], p["iterations_to_policy"], p["seconds_to_policy"], p["speedup"]])
    table = format_table(["step", "episodes", "Q(pi) - Q(0)", "Adam final (median)", "frac above pi",
                          "Adam iters to pi", "Adam s to pi", "speedup"], rows)
    return (f"{table}\nAdam from the zero action, lr {r['adam']['learning_rate']}, {r['adam']['iterations']} iterations, "
            f"on each snapshot's own states; 'to pi' = the clamped mean reaches {r['reach_level']}")


DOMAIN = Domain(
    runs=RUNS,
    evaluate=evaluate,
    eval_table=eval_table,
    eval_flags=("semi_amortized", "video"),
    gap=control_gap,
    gap_report=gap_report,
    gap_across_training=control_gap_across_training,
    gap_across_training_report=gap_across_training_report,
    export=export_control,
    shipped_dir=Path(__file__).parent / "shipped",
)
