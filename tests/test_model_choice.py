"""`amortize eval/gap --checkpoint final|latest|best`: the best periodic evaluation's model is kept next to the
latest checkpoint's, and either can be measured without touching the final model's results."""

from __future__ import annotations

import json
import math

import pytest
import torch

from agents.cli import main
from agents.common.best import BestModel
from agents.common.runs import RunDir
from tiny_runs import trained_sphere_sac
from agents.registry import config_from_dict, make_agent
from agents.workflows import evaluate, start_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SPHERE = {"device": "cpu", "seed": 3, "eval": {"contexts": 32, "episodes": 2, "timing_repeats": 2},
          "solver": {"restarts": 4, "steps": 30}}


def logged(run: RunDir, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run.tensorboard))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def objective_run(tmp_path_factory):
    cfg = config_from_dict({**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16], "batch_size": 32,
                                                 "learning_rate": 3e-2},
                            "train": {"total_steps": 60, "checkpoint_every": 20, "eval_every": 10, "log_every": 10}})
    run = start_run(cfg, "objective", tmp_path_factory.mktemp("runs"))
    make_agent(cfg, run).train()
    return run


def test_the_best_model_is_that_of_the_lowest_logged_evaluation(objective_run):
    run = objective_run
    record = json.loads((run.path / "best" / "best.json").read_text())
    curve = logged(run, "eval/objective_gap")
    step, value = min(curve, key=lambda sv: sv[1])
    assert record["metric"] == "eval/objective_gap" and record["mode"] == "min"
    assert record["step"] == step and math.isclose(record["value"], value, rel_tol=1e-6)
    # the kept weights are those of that step: evaluating them again gives the same held-out gap
    agent = make_agent(run.load_config(_schema()), run)
    agent.use_model("best")
    from agents.common.heldout import cached_heldout

    heldout = cached_heldout(agent.problem, agent.config, run, agent.device, 32)
    y = agent.load_predictor()(heldout.contexts)
    gap = (agent.problem.objective(y, heldout.contexts) - heldout.value).mean().item()
    assert math.isclose(gap, value, rel_tol=1e-4, abs_tol=1e-6)


def _schema():
    from agents.registry import SCHEMA

    return SCHEMA


def test_tensorboard_holds_the_resolved_config_as_text(objective_run):
    acc = EventAccumulator(str(objective_run.tensorboard))
    acc.Reload()
    (event,) = acc.Tensors("config/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert "name: objective" in text and "learning_rate: 0.03" in text


def test_tensorboard_holds_the_settings_and_the_best_figure_as_hparams_in_the_runs_own_folder(objective_run):
    from agents.workflows import _train_until_stopped

    run = objective_run
    cfg = run.load_config(_schema())
    _train_until_stopped(make_agent(cfg, run), run, resume=True)  # the workflow writes them after training
    acc = EventAccumulator(str(run.tensorboard))
    acc.Reload()
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))
    best = json.loads((run.path / "best" / "best.json").read_text())
    (point,) = acc.Scalars("hparams/best_eval/objective_gap")
    assert point.value == pytest.approx(best["value"], rel=1e-6)
    assert [p for p in run.tensorboard.iterdir() if p.is_dir()] == []  # one TensorBoard run


def test_eval_of_best_and_latest_writes_their_own_results(objective_run, capsys):
    run = objective_run
    final = evaluate(run.path, episodes=1)
    best = evaluate(run.path, episodes=1, checkpoint="best")
    assert best["json"].endswith("eval-best.json") and final["json"].endswith("eval.json")
    saved = json.loads((run.path / "eval-best.json").read_text())
    assert saved["model"] == "best" and "model" not in json.loads((run.path / "eval.json").read_text())
    assert main(["gap", str(run.path), "--checkpoint", "latest"]) == 0
    assert json.loads((run.path / "gap-latest.json").read_text())["model"] == "latest"
    assert (run.plots / "gap-latest.png").is_file() and (run.plots / "objective_gap-best.png").is_file()
    assert "gap-latest.json" in capsys.readouterr().out


def test_latest_reads_a_killed_run_that_has_no_final_model(tmp_path):
    cfg = config_from_dict({**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16], "batch_size": 32},
                            "train": {"total_steps": 20, "checkpoint_every": 10, "eval_every": 10, "log_every": 10}})
    run = start_run(cfg, "killed", tmp_path)
    make_agent(cfg, run).train()
    (run.path / "model.pt").unlink()  # killed after its last checkpoint, before the final save
    with pytest.raises(FileNotFoundError, match="model.pt"):
        evaluate(run.path, episodes=1)
    result = evaluate(run.path, episodes=1, checkpoint="latest")
    assert json.loads((run.path / "eval-latest.json").read_text())["model"] == "latest" and result["table"]
    agent = make_agent(cfg, run)
    agent.use_model("latest")
    saved = torch.load(run.checkpoints / "latest.pt", weights_only=True)["model"]
    model = agent.load_predictor().__self__  # the loaded AmortizedModel's weights are the checkpoint's
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_sb3_runs_keep_their_best_and_read_their_newest_checkpoint(tmp_path):
    cfg, run = trained_sphere_sac(60, tmp_path)
    record = json.loads((run.path / "best" / "best.json").read_text())
    assert (run.path / "best" / "model.zip").is_file()
    assert record["value"] == min(v for _, v in logged(run, "eval/objective_gap"))
    agent = make_agent(cfg, run)
    agent.use_model("latest")
    assert agent.model_dir.name == "sb3-000000000060"
    assert evaluate(run.path, episodes=1, checkpoint="best")["table"]


def test_a_run_without_a_best_model_or_checkpoint_says_so(tmp_path):
    cfg = config_from_dict({**SPHERE, "agent": {"kind": "sac"}})
    run = start_run(cfg, "fresh", tmp_path)
    with pytest.raises(FileNotFoundError, match="fresh.*has no best model yet.*train.eval_every"):
        evaluate(run.path, checkpoint="best")
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint yet"):
        evaluate(run.path, checkpoint="latest")
    with pytest.raises(SystemExit):  # argparse names the allowed choices
        main(["eval", str(run.path), "--checkpoint", "newest"])


def test_best_model_offers_replace_only_on_improvement_and_survive_a_resume(tmp_path):
    run = RunDir.create("r", tmp_path)
    saved: list[int] = []

    def save(step):
        return lambda d: (d / "m.txt").write_text(str(step)) and saved.append(step)

    best = BestModel(run, "eval/return", "max")
    assert best.offer({"eval/return": 1.0}, 10, save(10))
    assert not best.offer({"eval/return": 0.5}, 20, save(20))
    assert not best.offer({"eval/return": float("nan")}, 30, save(30))
    assert best.offer({"eval/return": 2.0}, 40, save(40))
    again = BestModel(run, "eval/return", "max")  # a resumed run competes against the kept value
    assert again.value == 2.0 and not again.offer({"eval/return": 1.5}, 50, save(50))
    assert (run.path / "best" / "m.txt").read_text() == "40" and saved == [10, 40]
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith("best")) == ["best"]
    with pytest.raises(KeyError, match="eval/return"):
        again.offer({"eval/other": 1.0}, 60, save(60))
