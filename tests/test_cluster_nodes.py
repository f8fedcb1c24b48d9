"""`samsem segment --ray` on a simulated two-node Ray cluster (ray.cluster_utils.Cluster, one machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samsem.cli import main
from samsem.io import partial_files, write_image
from samsem.runtime.cluster import ClusterOptions, SegmentJob, segment_on_ray
from samsem.runtime.config import RunOptions
from samsem.synth.generate import generate_sample

pytest.importorskip("ray", reason="needs the [dist] extra (Ray)")


@pytest.fixture
def two_nodes():
    """A head and a worker node of one CPU each, this process connected as the driver."""
    import logging

    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # another module's instance, if any
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_nodes_share_the_work_and_match_the_local_command(two_nodes, tmp_path: Path) -> None:
    images = tmp_path / "images"
    for i in range(6):
        write_image(images / f"sem{i}.png", generate_sample("medium", 256, 256, seed=10 + i).image)
    assert main(["segment", str(images), "-o", str(tmp_path / "local"), "--model", "classical"]) == 0

    job = SegmentJob.create(tmp_path / "ray", RunOptions(), model="classical")
    run = segment_on_ray([str(images)], job, ClusterOptions(workers=2), progress=False)
    assert run.layout.workers == 2 and run.summary.done == 6 and not run.summary.failures
    assert len({r.node for r in run.records}) == 2, "each node runs one worker"
    for i in range(6):
        ray_mask = (tmp_path / "ray" / f"sem{i}.mask.png").read_bytes()
        assert ray_mask == (tmp_path / "local" / f"sem{i}.mask.png").read_bytes()
        ray_report, local_report = (
            json.loads((tmp_path / d / f"sem{i}.report.json").read_text()) | {"timings_s": None}
            for d in ("ray", "local")
        )
        assert ray_report == local_report
    assert partial_files(tmp_path / "ray") == []
