"""The named iteration protocol that the fixed-point and L2O domains implement and their envs step."""

import pytest
import torch

from envs.fixed_point import FixedPointVectorEnv
from envs.l2o import LearnToOptimizeVectorEnv
from learned_optimizers.common.iteration import BatchedIteration, iterate
from learned_optimizers.families import make_map
from learned_optimizers.fixed_point.core import FixedPointIteration, action_dim, solve
from learned_optimizers.l2o.core import L2OIteration, base_learning_rate
from learned_optimizers.l2o.tasks import make_tasks


def _fixed_point():
    fp_map = make_map("deq")
    x = fp_map.sample_contexts(6, torch.Generator().manual_seed(0)).double()
    return FixedPointIteration(fp_map, fp_map.settings), x


def _l2o():
    tasks = make_tasks("quadratic")
    g = torch.Generator().manual_seed(0)
    x = tasks.sample_contexts(5, g).double()
    return L2OIteration(tasks, base_learning_rate(tasks)), x, tasks.initial_iterate(x, g)


def test_both_domains_implement_the_protocol_and_their_envs_step_it():
    assert isinstance(_fixed_point()[0], BatchedIteration)
    assert isinstance(_l2o()[0], BatchedIteration)
    assert isinstance(FixedPointVectorEnv(2).method, FixedPointIteration)
    assert isinstance(LearnToOptimizeVectorEnv(2, family="quadratic").method, L2OIteration)


def test_continuing_from_a_state_equals_one_long_run():
    method, x = _fixed_point()
    k = action_dim(method.fp_map, method.settings)
    policy = lambda obs: 0.01 * torch.tanh(obs[:, :k])  # noqa: E731  any deterministic policy
    long = list(iterate(method, x, 8, policy))
    head = list(iterate(method, x, 3, policy))
    tail = list(iterate(method, x, 5, policy, state=head[-1]))
    assert len(long) == 9 and tail[0] is head[-1]
    torch.testing.assert_close(tail[-1].y, long[-1].y, rtol=0, atol=0)
    assert not torch.equal(long[-1].y, list(iterate(method, x, 8))[-1].y)  # the policy did change the iterates


def test_zero_action_is_the_classical_method():
    method, x = _fixed_point()
    trace = solve(method.fp_map, x, method.settings, 10)
    states = list(iterate(method, x, 10))
    torch.testing.assert_close(torch.stack([s.ratio for s in states], 1), trace.ratios)
    # L2O: the zero action is Adam at the base learning rate, step for step
    method, x, phi0 = _l2o()
    phi = phi0.clone().requires_grad_(True)
    adam = torch.optim.Adam([phi], lr=method.lr)
    for state in iterate(method, x, 5, None, phi0):
        torch.testing.assert_close(state.phi, phi.detach(), rtol=1e-6, atol=1e-9)
        adam.zero_grad()
        method.tasks.objective(phi, x).sum().backward()
        adam.step()


def test_l2o_has_no_default_start():
    method, x, _ = _l2o()
    with pytest.raises(ValueError, match="no default start: pass the initial parameters"):
        method.start(x)
