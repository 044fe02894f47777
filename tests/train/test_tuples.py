"""The per-rank epoch plan: every rank derives the same global batches and trains on equal shares."""

import numpy as np

from solution.train.tuples import EpochPlan, epoch_batches


def _plan(n, shapes):
    return EpochPlan([[i, i, i] for i in range(n)], [shapes[i % len(shapes)] for i in range(n)], {})


def test_every_rank_gets_the_same_number_of_tuples_in_every_batch():
    plan = _plan(23, [(160, 128), (128, 160), (160, 160)])  # three buckets with ragged tails
    for world in (1, 2, 3, 4):
        batches = epoch_batches(plan, batch_tuples=2, world=world, seed=0, epoch=1)
        assert batches == epoch_batches(plan, 2, world, 0, 1)  # derived from (seed, epoch) alone
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
