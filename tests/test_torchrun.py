"""The one reader of torchrun's environment."""

import pytest

from solution.torchrun import launch


def test_a_plain_process_is_rank_zero_of_one():
    place = launch({})
    assert (place.rank, place.local_rank, place.world, place.local_world, place.active) == (0, 0, 1, 1, False)


def test_torchrun_values_are_read_and_a_bad_one_is_named():
    place = launch({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert (place.rank, place.local_rank, place.world, place.local_world, place.active) == (3, 1, 4, 2, True)
    assert place.launched and not launch({}).launched and launch({"LOCAL_RANK": "0"}).launched
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not a whole number"):
        launch({"WORLD_SIZE": "two"})
