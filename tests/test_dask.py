"""The sweep's arms on a local Dask cluster (2 worker processes) compute what the sequential
run computes: same candidates, same quality/size metrics, in separate workdirs. Tasks cross a
process boundary there (pickled arguments, MLflow writes from the workers), which the thread
runner never exercises."""

import json
import re
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from sweep_tiny import REPO, TINY, clean_env, nash, with_overrides

ARMS = (
    "pruning.arms=[{method: sft, decoder_layers: 1}, "
    "{method: nash, decoder_layers: 1, targets: [0.3]}]"
)
#: Metrics that do not depend on timing: quality, size, sparsity, training curves' last values.
UNTIMED = re.compile(
    r"^(rouge|exact_match|gen_len|num_examples|params_|encoder_sparsity|"
    r"teacher_rouge)|/(eval_|train_loss)"
)


def _candidates(workdir) -> dict[str, dict[str, float]]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`nash.kind` = 'candidate'"
    )
    return {
        r.data.tags["nash.label"]: {k: v for k, v in r.data.metrics.items() if UNTIMED.search(k)}
        for r in runs
    }


CHOOSE = """
import json
from flows.sweep_flow import make_task_runner
from nash_core.config import load_config
from nash_core.errors import NashError

out = {}
for name, sets in [("threads", ["experiment.max_concurrent_arms=3"]),
                   ("sequential", ["experiment.task_runner=sequential"]),
                   ("dask", ["experiment.task_runner=dask", "experiment.dask_workers=3"]),
                   ("dask_address", ["experiment.task_runner=dask",
                                     "experiment.dask_address=tcp://10.0.0.5:8786"]),
                   ("ray", ["experiment.task_runner=ray"])]:
    try:
        r = make_task_runner(load_config("configs/smoke.yaml", sets))
        out[name] = [type(r).__name__, getattr(r, "_max_workers", None),
                     getattr(r, "cluster_kwargs", None), getattr(r, "address", None)]
    except NashError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_the_configured_task_runner_is_the_one_used(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", CHOOSE],
        cwd=REPO,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.splitlines()[-1])
    assert got["threads"][:2] == ["ThreadPoolTaskRunner", 3]
    assert got["sequential"][:2] == ["ThreadPoolTaskRunner", 1]
    assert got["dask"][0] == "DaskTaskRunner"
    assert got["dask"][2] == {
        "n_workers": 3,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    assert got["dask_address"][0] == "DaskTaskRunner"
    assert got["dask_address"][3] == "tcp://10.0.0.5:8786"
    try:
        import prefect_ray  # noqa: F401
    except ImportError:  # the normal case here: the ray extra is not installed
        assert "pip install 'nash-pipeline[ray]'" in got["ray"]
    else:
        assert got["ray"][0] == "RayTaskRunner"


@pytest.mark.slow
def test_dask_sweep_matches_the_sequential_sweep(tmp_path):
    env = clean_env(tmp_path)
    results = {}
    for runner in ("sequential", "dask"):
        overrides = TINY + [ARMS, f"experiment.task_runner={runner}", "experiment.dask_workers=2"]
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

    assert "LocalCluster" in results["dask"].stderr + results["dask"].stdout
    seq, dask = _candidates(tmp_path / "sequential"), _candidates(tmp_path / "dask")
    assert sorted(seq) == sorted(dask) == ["nash-k1@0.3", "sft-k1", "teacher"]
    for label in seq:
        assert {"rougeL", "params_total", "encoder_sparsity"} <= seq[label].keys(), label
        assert dask[label] == seq[label], label
