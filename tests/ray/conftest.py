"""A real local Ray cluster shared by the tests of this folder (one start-up, ~5 s)."""

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # logical CPUs beyond the 2 physical ones keep Ray Data's bookkeeping tasks schedulable beside the actors
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
