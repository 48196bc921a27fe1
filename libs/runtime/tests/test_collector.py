"""The garbage collector a service runs with once it is up."""

import gc
from collections.abc import Iterator

import pytest

from switchboard_runtime.service import GC_THRESHOLDS, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_full_passes_made_rare() -> None:
    alive_at_start_up: list[list[int]] = [[] for _ in range(10)]
    frozen_before = gc.get_freeze_count()

    tune_collector()

    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() >= frozen_before + len(alive_at_start_up)
    # Frozen: in no generation a collection walks.
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(o) in walked for o in alive_at_start_up)
