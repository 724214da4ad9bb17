"""`nash deploy` against a real `prefect server` on 127.0.0.1: the deployment carries the cron
schedule, a scheduled run actually executes the sweep, and the serving process stops cleanly.
And without a server, `nash deploy` refuses with the commands to start one (no silent schedule)."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient
from sweep_tiny import BIN, REPO, TINY, clean_env, with_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None, method: str = "POST"):
    data = json.dumps(body or {}).encode() if method == "POST" else None
    req = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait(pred, timeout: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _env(tmp_path, api_url=None) -> dict:
    return clean_env(tmp_path, **({"PREFECT_API_URL": api_url} if api_url else {}))


def test_deploy_refuses_without_a_server(tmp_path):
    res = subprocess.run(
        [
            BIN / "nash",
            "deploy",
            "configs/smoke.yaml",
            "--cron",
            "0 3 * * *",
            "--workdir",
            tmp_path / "w",
        ],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "prefect server start --host 127.0.0.1" in res.stderr
    assert "PREFECT_API_URL" in res.stderr


def test_deploy_rejects_a_bad_cron(tmp_path):
    res = subprocess.run(
        [
            BIN / "nash",
            "deploy",
            "configs/smoke.yaml",
            "--cron",
            "every day",
            "--workdir",
            tmp_path / "w",
        ],
        cwd=REPO,
        env=_env(tmp_path, "http://127.0.0.1:9/api"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "not a valid cron expression" in res.stderr


@pytest.mark.slow
def test_scheduled_sweep_runs_on_a_real_server(tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = _env(tmp_path, url)
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env={**env, "PREFECT_API_URL": ""},
        stdout=open(logs / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    serving = dep = paused = code = None
    try:
        _wait(lambda: _healthy(url), 120, "the Prefect server's /health")
        cmd = [
            BIN / "nash",
            "deploy",
            "configs/smoke.yaml",
            "--cron",
            "* * * * *",
            "--name",
            "every-minute",
            "--workdir",
            tmp_path / "work",
            *with_overrides(TINY),
        ]
        serving = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=open(logs / "serve.log", "w"), stderr=subprocess.STDOUT
        )

        def deployment():
            found = [d for d in _api(url, "/deployments/filter") if d["name"] == "every-minute"]
            return found[0] if found else None

        dep = _wait(deployment, 120, "the deployment to be registered")
        crons = [s["schedule"].get("cron") for s in dep["schedules"]]
        assert crons == ["* * * * *"] and dep["schedules"][0]["active"]
        assert dep["parameters"]["config_path"] == str(REPO / "configs/smoke.yaml")

        def finished_run():
            runs = _api(
                url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}}
            )
            bad = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
            assert not bad, (logs / "serve.log").read_text()[-3000:]
            return [r for r in runs if r["state_type"] == "COMPLETED"]

        done = _wait(finished_run, 420, "a scheduled run to complete")
        assert done[0]["auto_scheduled"] is True
        client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
        sweeps = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], "tags.`nash.kind` = 'sweep'"
        )
        assert [r.info.status for r in sweeps] == ["FINISHED"]
        sweep_run = _api(
            url, f"/flow_runs/{sweeps[0].data.tags['prefect.flow_run_id']}", method="GET"
        )  # the sweep: a subflow of the scheduled run
        assert sweep_run["parent_task_run_id"] and sweep_run["state_type"] == "COMPLETED"
    finally:
        if serving is not None:
            serving.send_signal(signal.SIGTERM)
            try:
                code = serving.wait(timeout=60)
            except subprocess.TimeoutExpired:
                serving.kill()
                code = "hung"
        if dep is not None:
            paused = _api(url, f"/deployments/{dep['id']}", method="GET")["paused"]
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert code == 0, (logs / "serve.log").read_text()[-3000:]
    assert "stopped serving" in (logs / "serve.log").read_text()
    assert paused is True, "stopping the serving process pauses the schedule"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False
