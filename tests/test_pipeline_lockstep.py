import pytest
import torch

from iterview.pipeline.multiview import lockstep, randn_per_instance


def noisy_walk(generators, steps=5):
    """A toy stochastic sampler per instance: its own noise at every step, one network call per step."""

    def run_one(i, model_fn):
        x = torch.randn(1, 3, generator=generators[i])
        for step in range(steps):
            x = x - 0.1 * model_fn(x, torch.full((1,), step)) + 0.05 * torch.randn(1, 3, generator=generators[i])
        return x

    return run_one


def test_lockstep_batches_network_calls_but_keeps_each_instances_randomness():
    calls = []

    def network(x, t):
        calls.append(x.shape[0])
        return x * (1 + t[:, None])

    seeds = [3, 1, 4]
    batched = lockstep(noisy_walk([torch.Generator().manual_seed(s) for s in seeds]), network, 3)
    assert calls == [3] * 5
    for i, seed in enumerate(seeds):
        alone = lockstep(noisy_walk([torch.Generator().manual_seed(seed)]), network, 1)
        assert torch.equal(batched[i : i + 1], alone)


@pytest.mark.timeout(30)
def test_lockstep_propagates_errors_without_hanging():
    def run_one(i, model_fn):
        x = torch.zeros(1, 1)
        for step in range(4):
            if i == 1 and step == 2:
                raise KeyError("instance 1 failed")
            x = model_fn(x, torch.zeros(1))
        return x

    with pytest.raises(KeyError, match="instance 1 failed"):
        lockstep(run_one, lambda x, t: x + 1, 3)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("extra", [0, 1, 2])
def test_lockstep_rejects_unequal_call_counts(extra):
    def run_one(i, model_fn):
        x = torch.zeros(1, 1)
        for _ in range(2 + (extra if i == extra else 0) + (i == 0)):
            x = model_fn(x, torch.zeros(1))
        return x

    with pytest.raises(RuntimeError, match="different numbers"):
        lockstep(run_one, lambda x, t: x + 1, 3)


def test_randn_per_instance_is_independent_of_batch_mates():
    batch = randn_per_instance((2, 3), [torch.Generator().manual_seed(s) for s in (5, 6)])
    assert batch.shape == (2, 2, 3)
    assert torch.equal(batch[1:], randn_per_instance((2, 3), [torch.Generator().manual_seed(6)]))
