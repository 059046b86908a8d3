"""Three Ray nodes on this machine (ray.cluster_utils.Cluster): a worker node is removed in the middle of a scoring job
over 512 real chest X-rays; the job still finishes with exactly the ids and predictions of a clean run."""

import threading
import time

import pytest

from meddiff.config import RayConfig, ScoreConfig, config_from_json
from meddiff.results import schema as S
from meddiff.scoring.local import score_checkpoint
from meddiff.results.store import read_results
from meddiff.bundle import read_bundle
from tests.agreement import assert_same_scores

pytestmark = pytest.mark.ray

SCORE = ScoreConfig(n_draws=6, split="all", limit=512, shard_size=16, batch_size=16)
POOL = RayConfig(actors=2, cpus_per_actor=1.0, threads_per_actor=1, actor_resources={"scorer": 1})


@pytest.fixture
def three_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=2, resources={"scorer": 2}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def test_node_removed_mid_job_loses_and_duplicates_nothing(three_nodes, tiny_checkpoint, tmp_path):
    import ray

    cluster, workers = three_nodes
    data = config_from_json(read_bundle(tiny_checkpoint).metadata["config"]).data
    clean = score_checkpoint(tiny_checkpoint, data, SCORE, tmp_path / "clean", ray_cfg=POOL)
    assert clean["scored"] == 512

    out = tmp_path / "failover"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(score_checkpoint(tiny_checkpoint, data, SCORE, out,
                                                                             ray_cfg=POOL)))
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(out.glob("shard-*.parquet"))) < 4:
        time.sleep(0.05)
    done_at_removal = len(list(out.glob("shard-*.parquet")))
    cluster.remove_node(workers[1])
    thread.join(timeout=900)
    assert not thread.is_alive(), "scoring did not finish after the node was removed"
    assert done_at_removal < 32, "the job finished before the node was removed; the test proves nothing"
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2

    b = read_results(out)
    assert len(b) == 512 and b[S.IMAGE_ID].is_unique and (b[S.STATUS] == "ok").all()  # 0 lost, 0 duplicated
    assert_same_scores(read_results(tmp_path / "clean"), b)  # same ids, same draws and votes (tests/agreement.py)
