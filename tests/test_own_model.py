"""The README's "Your own model" commands, exactly as written there, on a tiny local T5 and CSV.

The test reads the commands from the README's code block (so the README cannot drift from what
is tested), runs them in a fresh directory holding `my-model/` (save_pretrained + tokenizer) and
`my_data.csv`, with the installed `nash` console script: `nash init`, `nash validate`, `nash run`
(a real sweep: Prefect's temporary server, a SQLite MLflow store, real training), `nash report`
and `nash serve` (a real `mlflow models serve`), then asks the served champion for a summary.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from foundation_tiny import corpus_texts, samsum_rows, save_t5, write_rows
from sweep_tiny import BIN, REPO, clean_env, free_port, model_server

pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    """The commands of the first code block under '## Your own model', comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def run(cmd: str, cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    assert argv[0] == "nash", cmd
    return subprocess.run(
        [str(BIN / "nash"), *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ask(port: int, records: list[dict]) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps({"dataframe_records": records}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serve_and_ask(cmd: str, cwd: Path, env: dict) -> None:
    port = free_port()
    argv = shlex.split(cmd)
    with model_server([BIN / "nash", *argv[1:], "--port", port], port, env, cwd=cwd):
        status, answer = ask(port, [{"source": "anna: lunch at noon? ben: yes, at the cafe."}])
        assert status == 200, answer
        (row,) = answer["predictions"]
        assert isinstance(row["summary"], str) and row["source_truncated"] is False
        status, answer = ask(port, [{"source": "  "}])
        assert status == 400 and "whitespace-only" in answer["message"]


def test_readme_own_model_commands(tmp_path):
    commands = readme_commands()
    assert [shlex.split(c)[:2] for c in commands] == [
        ["nash", "init"],
        ["nash", "validate"],
        ["nash", "run"],
        ["nash", "report"],
        ["nash", "serve"],
    ]
    home = tmp_path / "home"
    home.mkdir()
    save_t5(home / "my-model", corpus_texts(200), dec_layers=4)
    # 40 rows with short summaries: a small test split and short outputs keep it to minutes
    rows = [{**r, "summary": " ".join(r["summary"].split()[:5])} for r in samsum_rows(40)]
    write_rows(rows, home / "my_data.csv")
    env = clean_env(tmp_path)
    env.pop("NASH_HOME", None)

    init, validate, sweep, report, serve = commands
    out = run(init, home, env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "t5 with 4 decoder layers; data 'dialogue' -> 'summary'" in out.stdout
    assert (home / "configs" / "mine.yaml").is_file()
    out = run(validate, home, env, timeout=300)
    assert out.returncode == 0 and ": OK" in out.stdout, out.stderr

    out = run(sweep, home, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "champion: " in out.stdout and "promotion: promoted" in out.stdout
    links = [ln for ln in out.stdout.splitlines() if "http://127.0.0.1:5000/#/" in ln]
    assert len(links) == 5 and all("workflowType=machine_learning" in ln for ln in links)

    out = run(report, home, env, timeout=300)
    assert out.returncode == 0, out.stderr
    for label in ("teacher", "nash-k1@0.3", "nash-k2@0.3", "sft-k1", "cofi@0.3", "-int8"):
        assert label in out.stdout, label

    serve_and_ask(serve, home, env)
