"""A study on a simulated two-node Ray cluster on this machine (ray.cluster_utils.Cluster, loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray")

from metarl.cluster.ray_support import init_ray, keep_local  # noqa: E402
from metarl.studies.runner import RunOptions, run_study  # noqa: E402
from metarl.studies.spec import parse_study  # noqa: E402
from tests.metarl.test_study import tiny_document  # noqa: E402

pytestmark = pytest.mark.slow


def test_tiny_study_completes_on_two_nodes_without_a_shared_study_directory(tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    keep_local()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        init_ray(cluster.address)
        nodes = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        assert len(nodes) == 2 and set(nodes.values()) == {"127.0.0.1"}
        spec = parse_study(tiny_document())
        study = tmp_path / "study"
        # every task works in its own copy under worker/ and sends its files to the study directory
        result = run_study(spec, study, RunOptions(address=cluster.address, progress=False,
                                                   worker_dir=str(tmp_path / "worker"), sync_seconds=0.5))
        assert sorted(result.done) == sorted(plan.key for plan in spec.plans()) and not result.failed
        manifest = json.loads((study / "manifest.json").read_text())
        assert {run["status"] for run in manifest["runs"]} == {"done"}
        used = {run["node"].split()[1] for run in manifest["runs"]}
        assert all(any(node.startswith(prefix) for node in nodes) for prefix in used)
        for plan in spec.plans():
            assert (study / plan.path / "eval_test.json").is_file()
            assert (study / plan.path / "config.json").is_file()
    finally:
        ray.shutdown()
        cluster.shutdown()
