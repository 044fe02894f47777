"""The per-rank epoch plan: every rank derives the same global batches and trains on equal shares."""

import numpy as np
import pytest

from solution.config import ConfigError
from solution.train.tuples import Epoch, epoch_batches, micro_batches


def _plan(n, shapes):
    return Epoch([[i, i, i] for i in range(n)], [shapes[i % len(shapes)] for i in range(n)], {})


def test_every_rank_gets_the_same_number_of_tuples_in_every_batch():
    plan = _plan(23, [(160, 128), (128, 160), (160, 160)])  # three buckets with ragged tails
    for world in (1, 2, 3, 4):
        batches = epoch_batches(plan, tuples_per_step=4, world=world, seed=0, epoch=1)
        assert batches == epoch_batches(plan, 4, world, 0, 1)  # derived from (seed, epoch) alone
        for batch in batches:
            shares = [batch[r::world] for r in range(world)]
            assert len({len(s) for s in shares}) == 1 and len(shares[0]) >= 1
            assert len({plan.shapes[i] for i in batch}) == 1
        used = [i for b in batches for i in b]
        assert len(used) == len(set(used)) and len(used) > 23 - 3 * world  # at most a tail per bucket cut


def test_another_epoch_or_seed_reorders():
    plan = _plan(40, [(160, 128)])
    first = epoch_batches(plan, 4, 1, seed=0, epoch=0)
    assert first != epoch_batches(plan, 4, 1, seed=0, epoch=1)
    assert first != epoch_batches(plan, 4, 1, seed=1, epoch=0)
    assert sorted(np.concatenate(first).tolist()) == list(range(40))


def test_a_step_is_global_whatever_the_number_of_ranks():
    """tuples_per_step counts the tuples of one optimiser step over every rank: 8 GPUs do not make it 8x."""
    plan = _plan(64, [(160, 160)])
    for world in (1, 2, 4, 8):
        batches = epoch_batches(plan, 8, world, seed=0, epoch=0)
        assert len(batches) == 8 and {len(b) for b in batches} == {8}
        shares = [sum((m for m in micro_batches(batches[0], r, world, 1)), []) for r in range(world)]
        assert sorted(sum(shares, [])) == sorted(batches[0])  # the ranks' forwards cover the step once
        assert {len(micro_batches(batches[0], r, world, 1)) for r in range(world)} == {8 // world}


def test_forwards_split_a_share_and_too_few_tuples_per_step_are_refused():
    assert micro_batches(list(range(12)), rank=1, world=2, tuples_per_forward=4) == [[1, 3, 5, 7], [9, 11]]
    with pytest.raises(ConfigError, match="tuples_per_step=2 is below the 4 ranks"):
        epoch_batches(_plan(8, [(1, 1)]), 2, 4, seed=0, epoch=0)


def test_size_schedule_sets_each_epochs_training_size():
    from solution.train.tuples import epoch_image_size

    tcfg = {"image_size": 128, "size_schedule": [[3, 160], [5, 192]]}
    assert [epoch_image_size(tcfg, e) for e in range(6)] == [128, 128, 160, 160, 192, 192]
    assert epoch_image_size({"image_size": 96, "size_schedule": []}, 4) == 96


def test_negatives_that_cannot_be_found_and_a_clamped_epoch_are_said(caplog):
    """#29: neg_num beyond the pool's other landmarks dropped every tuple, then a traceback; tuples_per_epoch
    beyond the data and a step larger than the epoch were clamped without a word."""
    import pytest

    from solution.config import ConfigError
    from solution.train.tuples import TrainSet, draw_epoch, epoch_batches

    train = TrainSet([str(i) for i in range(12)], [None] * 12, np.repeat(np.arange(4), 3))
    cfg = {"tuples_per_epoch": 50, "pool_size": 12, "neg_num": 2, "negatives": "random", "positives": "random",
           "positive_k": 1, "loss": "triplet"}
    caplog.set_level("WARNING")
    plan = draw_epoch(train, [(64, 64)] * 12, cfg, seed=0, epoch=1, describe=None)
    assert len(plan.tuples) == 12 and "not train.tuples_per_epoch=50" in caplog.text
    epoch_batches(plan, 32, 1, seed=0, epoch=1)
    assert "fewer than train.tuples_per_step=32" in caplog.text
    with pytest.raises(ConfigError, match="train.neg_num=4 .* from 4 landmarks; lower train.neg_num"):
        draw_epoch(train, [(64, 64)] * 12, {**cfg, "neg_num": 4}, seed=0, epoch=1, describe=None)
