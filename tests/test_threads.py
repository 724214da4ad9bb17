"""torch's intra-op thread count is per OS thread: a training step must run with
experiment.torch_threads whichever task-runner thread runs it, and whatever ran there before."""

from __future__ import annotations

import threading

import torch

from nash_core import launch
from nash_core.config import load_config


def test_a_step_runs_with_the_configured_threads_in_any_worker_thread(monkeypatch):
    cfg = load_config("configs/smoke.yaml", ["experiment.torch_threads=2"])
    seen = {}

    def record(cfg, args, callback, device):
        seen["threads"] = torch.get_num_threads()
        return args

    monkeypatch.setitem(launch.STEPS, "teacher", record)
    monkeypatch.setattr(launch, "step_args", lambda step, args: args)

    def worker():
        torch.set_num_threads(1)  # what a previous task (or a CTranslate2 load) left behind
        launch.run_step("teacher", cfg, {"out_dir": "unused"})

    before = torch.get_num_threads()
    try:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 2
