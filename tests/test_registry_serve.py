"""A candidate as a pyfunc model: logged, registered under an alias, loaded and served over HTTP."""

import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
from sweep_tiny import free_port, model_server
from tiny_t5 import tiny_t5

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
    model = tiny_t5(
        len(tok),
        seed=seed,
        num_heads=2,
        num_layers=1,
        num_decoder_layers=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    model.save_pretrained(str(out))
    return out


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
    assert list(out.columns) == ["summary", "source_tokens", "source_truncated"]
    assert len(out) == 2 and all(isinstance(s, str) for s in out["summary"])

    with serving(uri, "models:/nash-test@champion") as port:
        status, answer = post(port, {"dataframe_records": [{"source": TEXTS[0]}]})
    assert status == 200, answer
    assert answer["predictions"] == out.to_dict(orient="records")[:1]  # same as in-process


@contextlib.contextmanager
def serving(uri: str, model_uri: str):
    """`mlflow models serve` of ``model_uri`` on a free port, healthy; stopped afterwards."""
    port = free_port()
    venv_bin = Path(sys.executable).parent  # the server execs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    argv = [venv_bin / "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    with model_server([*argv, "-p", port, "-h", "127.0.0.1"], port, env, wait_s=90):
        yield port


def post(port: int, payload) -> tuple[int, dict]:
    """POST ``payload`` as JSON to /invocations: (HTTP status, the decoded JSON answer)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_served_model_refuses_bad_sources_and_says_when_it_truncated(store, tmp_path):
    """Behind a real `mlflow models serve`: empty, whitespace-only, non-text sources and a wrong
    column are a 400 naming the problem; a source longer than max_source_length is summarised
    from its beginning and the answer says so."""
    cfg, uri, client, exp = store
    run = tracking.create_run(client, exp, "cand", {})
    config = serving_config(cfg) | {"max_source_length": 12}
    log_candidate_model(client, run, tiny_model(tmp_path / "m", 0), config)
    long_text = " ".join([TEXTS[0]] * 4)
    with serving(uri, f"runs:/{run}/model") as port:
        status, answer = post(
            port, {"dataframe_records": [{"source": TEXTS[1]}, {"source": long_text}]}
        )
        assert status == 200, answer
        short, long = answer["predictions"]
        assert isinstance(short["summary"], str) and isinstance(long["summary"], str)
        assert short["source_truncated"] is False and short["source_tokens"] <= 12
        assert long["source_truncated"] is True and long["source_tokens"] > 12

        bad = {
            "empty": [{"source": TEXTS[0]}, {"source": ""}],
            "whitespace": [{"source": " \n\t "}],
            "wrong column": [{"text": TEXTS[0]}],
            "number": [{"source": 42}],
            "null": [{"source": None}],
        }
        for what, records in bad.items():
            status, answer = post(port, {"dataframe_records": records})
            assert status == 400, (what, status, answer)
            message = answer.get("message", "")
            assert "source" in message, (what, message)
            if what in ("empty", "whitespace", "null"):
                assert "empty, whitespace-only or not text" in message, (what, message)
        assert "row(s) 1" in post(port, {"dataframe_records": bad["empty"]})[1]["message"]


def test_a_ctranslate2_champion_is_served_through_ctranslate2(store, tmp_path):
    """A CTranslate2 variant registered as champion: the logged model carries the converted
    directory, loads as a CT2Model and answers over HTTP as a PyTorch champion does."""
    from nash_core.runtimes.ct2 import convert

    cfg, uri, client, exp = store
    ct2 = convert(tiny_model(tmp_path / "m", 0), tmp_path / "m.ct2-int8", "int8")
    run = tracking.create_run(client, exp, "cand-ct2", {})
    log_candidate_model(client, run, ct2, {**serving_config(cfg), "quantize": "ct2-int8"})
    register_champion(client, "nash-ct2", run, "champion", {}, "key-ct2")

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/nash-ct2@champion")
    assert type(model.unwrap_python_model().model).__name__ == "CT2Model"
    out = model.predict(pd.DataFrame({"source": TEXTS}))
    assert len(out) == 2 and all(isinstance(s, str) for s in out["summary"])
    with serving(uri, "models:/nash-ct2@champion") as port:
        status, answer = post(port, {"dataframe_records": [{"source": TEXTS[0]}]})
    assert status == 200, answer
    assert answer["predictions"] == out.to_dict(orient="records")[:1]  # same as in-process
