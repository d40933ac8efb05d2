"""Training order and augmentation drawn from (seed, epoch): what makes a resumed run exact; evaluation
shards that read every sample once."""

from __future__ import annotations

import pytest
import torch

from converge import ConfigError
from converge.data.module import DataModule
from converge.data.sampling import EpochSampler, SeededDataset, ShardSampler


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


@pytest.mark.parametrize(("size", "repeated"), [(145, 0), (144, 0), (129, 1), (1, 1)])
def test_evaluation_shards_read_each_sample_once_unless_the_ranks_batch_counts_would_differ(
        size: int, repeated: int) -> None:
    shards = [list(ShardSampler(range(size), batch_size=64, world=(2, rank))) for rank in (0, 1)]
    assert sorted(set(shards[0] + shards[1])) == list(range(size))
    assert len(shards[0]) + len(shards[1]) == size + repeated
    # 129 would be 65 + 64 samples, 2 batches of 64 on one rank and 1 on the other: padded as Lightning would
    assert len({-(-len(shard) // 64) for shard in shards}) == 1, "every rank runs the same number of batches"
    assert list(ShardSampler(range(size), batch_size=64)) == list(range(size)), "one process reads all, in order"


class _Batches(_Noisy):
    """Batches itself: `__getitems__` answers a whole batch of (index, seed) keys at once, as a tuple."""

    calls = 0

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        indices, seeds = zip(*keys, strict=True)
        return torch.tensor(indices), torch.tensor(seeds)


class _Module(DataModule):
    def spec(self) -> dict:
        return {}


def test_the_loader_passes_a_dataset_made_batch_through_in_the_samplers_order() -> None:
    module, data = _Module(batch_size=4, eval_batch_size=3), _Batches()
    module.sampling_seed = 5
    batches = list(module.loader(data, train=True))
    assert all(isinstance(batch, tuple) for batch in batches), "the dataset's batch, not collated again"
    keys = [(int(i), int(s)) for indices, seeds in batches for i, s in zip(indices, seeds, strict=True)]
    assert keys == list(EpochSampler(data, seed=5)) and data.calls == len(batches) == 3
    indices = [int(i) for batch in module.loader(_Noisy(), train=False) for i in batch[:, 0].floor()]
    assert indices == list(range(10)), "plain samples are still collated, evaluation reads each once in order"


class _Texts(torch.utils.data.Dataset):
    """Texts of 1 to 60 tokens, in no order: what `group_by_length` batches by."""

    def __init__(self, count: int) -> None:
        self.lengths = [int(n) for n in torch.randint(1, 61, (count,), generator=torch.Generator().manual_seed(0))]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> int:
        return index


def test_length_grouped_batches_pad_little_stay_shuffled_and_repeat_by_seed_and_epoch() -> None:
    data, size = _Texts(1000), 16
    grouped = EpochSampler(data, seed=1, epoch=2, lengths=data.lengths, batch_size=size)
    order = list(grouped)
    assert sorted(order) == list(range(1000)) and order == list(EpochSampler(data, 1, 2, data.lengths, size))
    assert order != list(EpochSampler(data, 1, 3, data.lengths, size))

    def padded(indices: list[int]) -> int:  # the tokens of the batches the DataLoader cuts, each padded to its longest
        batches = [indices[start:start + size] for start in range(0, len(indices), size)]
        return sum(len(batch) * max(data.lengths[i] for i in batch) for batch in batches)

    shuffled = list(EpochSampler(data, seed=1, epoch=2))
    assert padded(order) < 0.6 * padded(shuffled)  # ~1.04x the real tokens, against ~1.9x
    firsts = [order[start] for start in range(0, 992, size)]  # the full batches come in no length order
    assert sorted(firsts, key=data.lengths.__getitem__) != firsts
    assert len(order[992:]) == 1000 % size and len(set(order[992:]) & set(order[:992])) == 0  # the short one last


def test_group_by_length_needs_samples_with_lengths() -> None:
    with pytest.raises(ConfigError, match="data.group_by_length=true: _Noisy's samples have no lengths"):
        _Module(batch_size=4, group_by_length=True).loader(_Noisy(), train=True)
    module = _Module(batch_size=4, group_by_length=True)
    assert len(list(module.loader(_Texts(10), train=True))) == 3
