"""No file a user loads runs code; a bad file is an error that names it.

Every crafted file below holds a pickle whose unpickling creates a marker
file. Each test first shows the payload is live (an unsafe reader creates the
marker), then feeds it to one of the project's entry points and asserts that
no marker appears and that the error names the file.
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import cloudpickle
import pytest
import torch

from agents.common.runs import RunDir
from agents.common.sb3_files import complete_checkpoints
from agents.registry import config_from_dict, make_agent
from agents.workflows import evaluate, gap, resume, start_run
from learned_optimizers.amortized import AmortizedModel
from learned_optimizers.fixed_point.neural_fp import FixedPointAccelerator
from learned_optimizers.l2o.coordinatewise import CoordinatewiseUpdate
from learned_optimizers.qp.rlqp import RhoPolicy

SMALL = {"eval": {"contexts": 32, "episodes": 2, "timing_repeats": 2}, "solver": {"restarts": 4, "steps": 30}}


class Payload:
    """Unpickling it opens (creates) ``marker``: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_torch_file(path: Path, marker: Path, blob: dict | None = None) -> Path:
    torch.save({**(blob or {}), "extra": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the payload is live: an unsafe reader runs it
    assert marker.exists()
    marker.unlink()
    return path


def sphere_config(kind: str, steps: int, **agent) -> object:
    return config_from_dict({"device": "cpu", "seed": 1, "agent": {"kind": kind, **agent}, **SMALL,
                             "train": {"total_steps": steps, "checkpoint_every": steps, "eval_every": steps,
                                       "log_every": steps}})


@pytest.fixture(scope="module")
def objective_run(tmp_path_factory):
    cfg = sphere_config("objective", 20, hidden_sizes=[16], batch_size=32)
    run = start_run(cfg, "objective", tmp_path_factory.mktemp("runs"))
    make_agent(cfg, run).train()
    return run


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    cfg = sphere_config("sac", 96, learning_starts=32, batch_size=16, n_envs=4, net_arch=[16], buffer_size=512)
    run = start_run(cfg, "sac", tmp_path_factory.mktemp("runs"))
    make_agent(cfg, run).train()
    return run


def copy_run(run: RunDir, tmp_path: Path) -> RunDir:
    import shutil

    target = tmp_path / run.name
    shutil.copytree(run.path, target)
    return RunDir(target)


# ----------------------------------------------------------------- torch files
MODEL_LOADERS = {
    "amortized model": AmortizedModel.load,
    "RLQP policy": RhoPolicy.load,
    "fixed-point accelerator": FixedPointAccelerator.load,
    "learned optimizer": CoordinatewiseUpdate.load,
}


@pytest.mark.parametrize("what", list(MODEL_LOADERS))
def test_model_loaders_refuse_a_pickle_that_runs_code(tmp_path, what):
    marker = tmp_path / "marker"
    path = crafted_torch_file(tmp_path / "model.pt", marker, {"state_dict": {}})
    with pytest.raises(ValueError, match="model.pt.*refused.*could run code"):
        MODEL_LOADERS[what](path)
    assert not marker.exists()


@pytest.mark.parametrize("content, why", [(b"", "empty"), (b"garbage" * 10, "torch cannot read it")])
@pytest.mark.parametrize("what", list(MODEL_LOADERS))
def test_model_loaders_name_an_empty_or_garbage_file(tmp_path, what, content, why):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"model.pt.*{why}"):
        MODEL_LOADERS[what](path)


def test_a_truncated_model_file_is_named(tmp_path, objective_run):
    data = (objective_run.path / "model.pt").read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.pt.*is not an amortized model file"):
        AmortizedModel.load(path)


def test_model_weights_of_the_wrong_shape_are_named(tmp_path, objective_run):
    blob = torch.load(objective_run.path / "model.pt")
    blob["hidden_sizes"] = [32]  # the weights are for [16]
    torch.save(blob, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="model.pt.*weights do not fit"):
        AmortizedModel.load(tmp_path / "model.pt")
    policy = RhoPolicy(3, (8,), "vector")
    policy.save(tmp_path / "policy.pt")
    blob = torch.load(tmp_path / "policy.pt")
    blob["hidden_sizes"] = [4]
    torch.save(blob, tmp_path / "policy.pt")
    with pytest.raises(ValueError, match="policy.pt.*weights do not fit"):
        RhoPolicy.load(tmp_path / "policy.pt")


def test_eval_and_gap_refuse_a_crafted_model_file(tmp_path, objective_run):
    run = copy_run(objective_run, tmp_path)
    marker = tmp_path / "marker"
    crafted_torch_file(run.path / "model.pt", marker, torch.load(objective_run.path / "model.pt"))
    for command in (lambda: evaluate(run.path, episodes=1), lambda: gap(run.path)):
        with pytest.raises(ValueError, match="model.pt.*could run code"):
            command()
    assert not marker.exists()


def test_resume_refuses_a_crafted_checkpoint(tmp_path, objective_run):
    run = copy_run(objective_run, tmp_path)
    marker = tmp_path / "marker"
    good = torch.load(objective_run.checkpoints / "latest.pt")
    crafted_torch_file(run.checkpoints / "latest.pt", marker, good)
    with pytest.raises(ValueError, match="latest.pt.*could run code"):
        resume(run.path, ["train.total_steps=40"])
    assert not marker.exists()


def test_a_crafted_dataset_cache_is_computed_again_not_run(tmp_path, objective_run):
    from agents.common.checkpointing import read_cache

    marker = tmp_path / "marker"
    path = crafted_torch_file(tmp_path / "heldout-32.pt", marker, {"contexts": torch.zeros(1)})
    assert read_cache(path, torch.device("cpu"), ("contexts",)) is None
    assert not marker.exists()


# ----------------------------------------------------------------- SB3 files
def craft_sb3_data(zip_path: Path, marker: Path) -> None:
    """Replace one value of the zip's ``data`` JSON by a cloudpickle ``:serialized:`` payload, as SB3 writes them."""
    with zipfile.ZipFile(zip_path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    data["gamma"] = {":type:": "<class 'float'>",
                     ":serialized:": base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


def test_sb3_eval_reads_weights_only_and_never_the_pickled_data(tmp_path, sac_run):
    from stable_baselines3 import SAC

    run = copy_run(sac_run, tmp_path)
    marker = tmp_path / "marker"
    craft_sb3_data(run.path / "model.zip", marker)
    SAC.load(run.path / "model.zip")  # SB3's own loader runs the payload
    assert marker.exists()
    marker.unlink()
    result = evaluate(run.path, episodes=1)  # our loader rebuilds from the config and reads the weights only
    assert not marker.exists()
    reference = evaluate(sac_run.path, episodes=1)
    assert result["vs_solver"]["model_objective_mean"] == pytest.approx(reference["vs_solver"]["model_objective_mean"])


def test_sb3_loader_refuses_crafted_weights_and_names_the_file(tmp_path, sac_run):
    run = copy_run(sac_run, tmp_path)
    marker = tmp_path / "marker"
    crafted = crafted_torch_file(tmp_path / "policy.pth", marker, {})
    with zipfile.ZipFile(run.path / "model.zip") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["policy.pth"] = crafted.read_bytes()
    with zipfile.ZipFile(run.path / "model.zip", "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match="model.zip.*refused"):
        evaluate(run.path, episodes=1)
    assert not marker.exists()
    (run.path / "model.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="model.zip.*not a zip"):
        evaluate(run.path, episodes=1)


def test_sb3_resume_never_unpickles_a_replay_buffer(tmp_path, sac_run):
    """A run from before the array checkpoints: its weights resume, its pickled buffer is left unread."""
    run = copy_run(sac_run, tmp_path)
    (latest,) = complete_checkpoints(run.checkpoints)
    (latest / "model.zip").rename(run.checkpoints / "sb3_model.zip")
    (run.checkpoints / "sb3_state.json").write_text(json.dumps({"step": 96}))
    marker = tmp_path / "marker"
    with open(run.checkpoints / "sb3_replay_buffer.pkl", "wb") as f:
        cloudpickle.dump(Payload(marker), f)
    import shutil

    shutil.rmtree(latest)
    resume(run.path, ["train.total_steps=128"])
    assert not marker.exists()
    (new,) = complete_checkpoints(run.checkpoints)
    assert new.name == "sb3-000000000128" and (new / "replay_buffer.npz").is_file()
