"""A candidate as a pyfunc model: logged, registered under an alias, loaded and served over HTTP."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from nash_core.base_model import build_demo_tokenizer
from nash_core.config import load_config
from nash_mlflow import tracking
from nash_mlflow.registry import log_candidate_model, register_champion, serving_config

TEXTS = [
    "anna: can we meet at noon? ben: yes, at the cafe.",
    "ben will call anna tomorrow about the flat.",
]


def tiny_model(out: Path, seed: int) -> Path:
    tok = build_demo_tokenizer(TEXTS * 3, out)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(tok),
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_heads=2,
            num_layers=1,
            num_decoder_layers=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
        )
    )
    model.save_pretrained(str(out))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store(tmp_path):
    cfg = load_config("configs/smoke.yaml", ["evaluation.max_new_tokens=6"])
    uri = tracking.resolve_tracking_uri(cfg, tmp_path)
    client = tracking.make_client(uri)
    exp = tracking.ensure_experiment(client, "reg-test", uri)
    return cfg, uri, client, exp


def test_register_alias_load_and_serve(store, tmp_path):
    cfg, uri, client, exp = store
    runs = []
    for seed in (0, 1):
        run = tracking.create_run(client, exp, f"cand{seed}", {})
        log_candidate_model(
            client, run, tiny_model(tmp_path / f"m{seed}", seed), serving_config(cfg)
        )
        runs.append(run)
    assert {a.path for a in client.list_artifacts(runs[0], "model")} >= {
        "model/MLmodel",
        "model/artifacts",
        "model/code",
    }

    v1 = register_champion(client, "nash-test", runs[0], "champion", {"m": 1}, "key-a")
    v2 = register_champion(client, "nash-test", runs[1], "champion", {"m": 2}, "key-b")
    again = register_champion(client, "nash-test", runs[1], "champion", {"m": 2}, "key-b")
    assert (v1, v2, again) == ("1", "2", "2")  # same result key: no duplicate version
    assert str(client.get_model_version_by_alias("nash-test", "champion").version) == "2"
    old = client.get_model_version("nash-test", "1")
    assert old.tags["m"] == "1" and old.run_id == runs[0]  # the previous champion stays

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/nash-test@champion")
    out = model.predict(pd.DataFrame({"source": TEXTS}))
    assert len(out) == 2 and all(isinstance(s, str) for s in out)

    port = free_port()
    venv_bin = Path(sys.executable).parent  # the server execs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        [
            str(venv_bin / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/nash-test@champion",
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "model server not healthy after 90 s"
                time.sleep(0.5)
        body = json.dumps({"dataframe_records": [{"source": TEXTS[0]}]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        assert answer["predictions"] == out[:1]  # same summary as in-process
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
