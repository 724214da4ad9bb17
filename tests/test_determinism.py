"""Same config, same seed, same CPU: two sweeps in two workdirs (separate `nash run` processes,
separate MLflow stores) give bit-identical weights and masks, the same candidates and the same
non-timing metrics, and the seed is on record in MLflow."""

from __future__ import annotations

import pytest
from reliability_tiny import assert_same_results, env, finished_sweep, reference, sweep
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.slow


def test_two_sweeps_with_one_seed_are_identical(tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory)
    rc, log, seconds = sweep(tmp_path / "work", env(tmp_path))
    print(f"\nsecond sweep: {seconds:.0f} s")
    assert rc == 0, log[-5000:]
    assert_same_results(tmp_path / "work", ref)
    for workdir in (ref, tmp_path / "work"):
        assert finished_sweep(workdir).data.params["experiment.seed"] == "0"

    # the comparison can fail: one weight of one fine-tuned candidate, nudged
    weights = sorted((tmp_path / "work" / "runs").glob("finetune-*/model/model.safetensors"))[0]
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, weights)
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same_results(tmp_path / "work", ref)
