"""The sweep's arms on a local Ray instance compute what the sequential run computes: same
candidates, same quality/size metrics. As on Dask, tasks cross a process boundary (Ray worker
processes get pickled arguments and write to MLflow themselves). The instance is kept to what a
2-core CI machine holds: 2 CPUs, an 80 MiB object store, no dashboard."""

import json
import re
import subprocess
import sys

import pytest
from sweep_tiny import REPO, TINY, clean_env, nash, with_overrides
from test_dask import ARMS, _candidates

pytest.importorskip("prefect_ray", reason="the test extra installs prefect-ray")

RAY_SMALL = ["experiment.ray_cpus=2", "experiment.ray_object_store_mb=80"]

CHOOSE = """
import json
from flows.sweep_flow import make_task_runner
from nash_core.config import load_config

r = make_task_runner(load_config("configs/smoke.yaml", ["experiment.task_runner=ray",
                                                         "experiment.ray_cpus=3"]))
print(json.dumps([type(r).__name__, r.address, r.init_kwargs]))
"""


def _choose(tmp_path, **env) -> list:
    res = subprocess.run(
        [sys.executable, "-c", CHOOSE],
        cwd=REPO,
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.splitlines()[-1])


def test_a_local_ray_instance_is_kept_small_and_a_cluster_is_used_as_it_is(tmp_path):
    name, address, init = _choose(tmp_path)
    assert (name, address) == ("RayTaskRunner", "local")
    assert init["num_cpus"] == 3
    assert init["object_store_memory"] == 256 * 2**20
    assert init["include_dashboard"] is False

    name, address, init = _choose(tmp_path, RAY_ADDRESS="ray://head:10001")
    assert (name, address) == ("RayTaskRunner", "ray://head:10001")
    assert "num_cpus" not in init and "object_store_memory" not in init


@pytest.mark.slow
def test_ray_sweep_matches_the_sequential_sweep(tmp_path):
    env = clean_env(tmp_path, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)  # a local instance, started and stopped by the sweep
    results = {}
    for runner in ("sequential", "ray"):
        overrides = TINY + [ARMS, f"experiment.task_runner={runner}", *RAY_SMALL]
        res = nash(
            [
                "run",
                "configs/smoke.yaml",
                "--workdir",
                tmp_path / runner,
                *with_overrides(overrides),
            ],
            env,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        results[runner] = res

    log = results["ray"].stderr + results["ray"].stdout
    assert "Started a local Ray instance" in log
    # the arms' steps ran in Ray worker processes (Ray prefixes their output with task and pid)
    assert re.search(r"\((prune-stage|finetune|materialize) pid=\d+\)", log), log[-3000:]
    seq, ray = _candidates(tmp_path / "sequential"), _candidates(tmp_path / "ray")
    assert sorted(seq) == sorted(ray) == ["nash-k1@0.3", "sft-k1", "teacher"]
    for label in seq:
        assert {"rougeL", "params_total", "encoder_sparsity"} <= seq[label].keys(), label
        assert ray[label] == seq[label], label
