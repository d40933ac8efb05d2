"""Training order and augmentation drawn from (seed, epoch): what makes a resumed run exact."""

from __future__ import annotations

import torch

from converge.data.sampling import EpochSampler, SeededDataset


class _Noisy(SeededDataset):
    """Sample i is i plus noise drawn from torch's RNG: a stand-in for a random augmentation."""

    def __len__(self) -> int:
        return 10

    def sample(self, index: int) -> torch.Tensor:
        return index + torch.rand(3)


def test_order_and_sample_seeds_depend_on_seed_and_epoch_only() -> None:
    data = _Noisy()
    first = EpochSampler(data, seed=1)
    first.set_epoch(3)  # what Lightning does each epoch
    torch.rand(7)  # the global stream moves on: nothing may change
    resumed = EpochSampler(data, seed=1, epoch=3)  # a resumed run's sampler starts at its epoch
    keys = list(first)
    assert keys == list(resumed)
    assert sorted(index for index, _ in keys) == list(range(10))
    assert [index for index, _ in keys] != [index for index, _ in EpochSampler(data, seed=1, epoch=4)]
    assert keys != list(EpochSampler(data, seed=2, epoch=3))


def test_seeded_samples_repeat_and_leave_the_global_stream_alone() -> None:
    data = _Noisy()
    state = torch.get_rng_state()
    once, again = data[(4, 123)], data[(4, 123)]
    assert torch.equal(once, again) and not torch.equal(once, data[(4, 124)])
    assert torch.equal(torch.get_rng_state(), state)
    assert sorted(EpochSampler(torch.utils.data.TensorDataset(torch.zeros(5)), seed=0)) == [0, 1, 2, 3, 4]  # plain
