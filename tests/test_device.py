"""The solver cores on the device the GPU check names (``AMORTIZE_TEST_DEVICE``, default cpu) against the real
packages: ``make gpu-check`` runs this file on cuda; the ordinary suite runs it on the CPU."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import osqp
import pytest
import scs
import torch

from learned_optimizers.conic.programs import make_cone_family
from learned_optimizers.conic.scs import SCS_PACKAGE_AS_THIS_CORE, solve_cone_programs
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.fixed_point.neural_fp import FixedPointAccelerator
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.coordinatewise import CoordinatewiseUpdate
from learned_optimizers.qp.admm import OSQPSettings, solve_qps
from learned_optimizers.qp.problems import generate
from learned_optimizers.qp.rlqp import SHIPPED_POLICY, RhoPolicy, RLQPSolver

DEVICE = os.environ.get("AMORTIZE_TEST_DEVICE", "cpu")
if torch.device(DEVICE).type == "cuda" and not torch.cuda.is_available():
    pytest.skip(f"AMORTIZE_TEST_DEVICE={DEVICE} but torch sees no CUDA device", allow_module_level=True)


def test_the_osqp_core_on_the_device_matches_real_osqp():
    settings = OSQPSettings()
    qps = [generate(c, n, seed) for c, n in (("random", 20), ("portfolio", 20), ("control", 4), ("svm", 2))
           for seed in range(3)]
    ours = solve_qps(qps, settings, device=DEVICE)
    assert ours.status.device.type == torch.device(DEVICE).type
    exact = 0
    for i, qp in enumerate(qps):
        solver = osqp.OSQP()
        solver.setup(**qp.osqp_data(), **settings.osqp_kwargs())
        ref = solver.solve(raise_error=False)
        assert ours.status_labels()[i] == ref.info.status, qp.name
        assert abs(float(ours.objective[i]) - ref.info.obj_val) <= 1e-3 * max(1.0, abs(ref.info.obj_val)), qp.name
        exact += int(ours.iterations[i]) == ref.info.iter
    assert exact >= 0.9 * len(qps)


def test_rlqp_on_the_device_takes_the_cpus_steps():
    policy = RhoPolicy.load(SHIPPED_POLICY)
    qps = [generate("random", 20, seed) for seed in range(6)]
    cpu = RLQPSolver(policy).solve(qps, device="cpu")
    dev = RLQPSolver(RhoPolicy.load(SHIPPED_POLICY, device=DEVICE)).solve(qps, device=DEVICE)
    assert dev.status_labels() == cpu.status_labels() == ["solved"] * len(qps)
    assert np.mean(dev.iterations.cpu().numpy() == cpu.iterations.numpy()) >= 0.8
    assert torch.allclose(dev.objective.cpu(), cpu.objective, rtol=1e-4)
    # and against the real osqp at the solver's eps, so that the CPU run of this test checks something too
    settings = RLQPSolver(policy).settings.osqp
    ref_iterations = []
    for i, qp in enumerate(qps):
        solver = osqp.OSQP()
        solver.setup(**qp.osqp_data(), **settings.osqp_kwargs())
        ref = solver.solve(raise_error=False)
        assert ref.info.status == "solved"
        assert abs(float(dev.objective[i]) - ref.info.obj_val) <= 10 * settings.eps_abs * max(1.0, abs(ref.info.obj_val))
        ref_iterations.append(ref.info.iter)
    assert float(dev.iterations.double().median()) <= float(np.median(ref_iterations))


def test_the_scs_core_on_the_device_matches_real_scs():
    family = make_cone_family("lasso", features=20, samples=40)
    batch = family.programs(family.sample_contexts(4, torch.Generator().manual_seed(3)).double().to(DEVICE))
    ours = solve_cone_programs(batch)
    for i in range(len(batch)):
        data, cone = batch.program(i).to_scs()
        # scs 3.3 rescales rows adaptively by default; our core implements the classic scalar scale
        real = scs.SCS(data, cone, verbose=False, **SCS_PACKAGE_AS_THIS_CORE).solve()
        assert ours.labels()[i] == real["info"]["status"] == "solved"
        assert abs(int(ours.iterations[i]) - real["info"]["iter"]) <= 0.1 * real["info"]["iter"]
        assert np.linalg.norm(ours.x[i].cpu().numpy() - real["x"]) <= 1e-4 * max(1.0, np.linalg.norm(real["x"]))


def test_the_shipped_fixed_point_accelerator_on_the_device_takes_the_cpus_evaluations():
    """NeuralFP (the shipped DEQ accelerator) on the device: every context to 1e-4 in the CPU's map evaluations,
    within one, and fewer than Anderson's on the same device."""
    cpu = FixedPointAccelerator.shipped("deq")
    dev = FixedPointAccelerator.shipped("deq", DEVICE)
    x = cpu.map.sample_heldout_contexts(128, torch.Generator().manual_seed(4)).double()
    on_cpu = cpu.solve(x, 100, stop_at=1e-4).evaluations_to(1e-4)
    on_dev = dev.solve(x.to(DEVICE), 100, stop_at=1e-4).evaluations_to(1e-4).cpu()
    assert torch.isfinite(on_dev).all() and (on_dev - on_cpu).abs().max() <= 1
    anderson = fp.solve(dev.map, x.to(DEVICE), replace(dev.map.settings, mode="hyper_aa"), 100, stop_at=1e-4)
    assert on_dev.median() < anderson.evaluations_to(1e-4).cpu().median()


def test_the_shipped_learned_update_on_the_device_takes_the_cpus_steps():
    """The shipped logreg update (learning to optimize) on the device: to tuned Adam's step-100 value in the CPU's
    median steps, within one, and in fewer than Adam's on the same device."""
    cpu = CoordinatewiseUpdate.shipped("logreg")
    dev = CoordinatewiseUpdate.shipped("logreg", DEVICE)
    gen = torch.Generator().manual_seed(5)
    x = cpu.tasks.sample_contexts(128, gen).double()
    phi0 = cpu.tasks.initial_iterate(x, gen).double()
    adam = l2o.solve(cpu.tasks, x, phi0, 100, lr=cpu.learning_rate)
    target = adam.values[:, 100]
    on_cpu = cpu.solve(x, phi0, 100).steps_to(target)
    on_dev = dev.solve(x.to(DEVICE), phi0.to(DEVICE), 100).steps_to(target.to(DEVICE)).cpu()
    assert abs(on_dev.median() - on_cpu.median()) <= 1 and on_dev.median() < 100
    assert torch.isfinite(on_dev).double().mean() >= torch.isfinite(on_cpu).double().mean() - 0.05
