"""`nash watch`: a sweep only when the base model's fingerprint moved; runs carry the new one,
the previous champion keeps its version, and the new selection becomes the challenger (champion
if the promotion gate passes)."""

import re

import pytest
from foundation_tiny import corpus_texts, save_t5
from mlflow.tracking import MlflowClient
from sweep_tiny import TINY, clean_env, nash, with_overrides


def _sweeps(client: MlflowClient) -> list:
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], "tags.`nash.kind` = 'sweep'")


@pytest.mark.slow
def test_watch_runs_only_when_the_base_model_changes(tmp_path):
    base = save_t5(tmp_path / "base", corpus_texts(), dec_layers=2, seed=0)
    work = tmp_path / "work"
    env = clean_env(tmp_path)
    args = [
        "watch",
        "configs/smoke.yaml",
        "--workdir",
        work,
        *with_overrides(TINY + [f"model.base={base}"]),
    ]

    first = nash(args, env)
    assert first.returncode == 0, first.stderr[-3000:]
    m = re.search(r"changed: <no champion> -> (\w+)", first.stdout)
    assert m, first.stdout
    fp1 = m.group(1)
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    assert len(_sweeps(client)) == 1

    second = nash(args, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"unchanged: {fp1}" in second.stdout
    assert len(_sweeps(client)) == 1, "an unchanged base model must start nothing"

    save_t5(tmp_path / "base", corpus_texts(), dec_layers=2, seed=1)  # new weights, same place
    third = nash(args, env)
    assert third.returncode == 0, third.stderr[-3000:]
    m = re.search(rf"changed: {fp1} -> (\w+)", third.stdout)
    assert m, third.stdout
    fp2 = m.group(1)
    assert fp2 != fp1
    sweeps = _sweeps(client)
    assert len(sweeps) == 2
    newest = max(sweeps, key=lambda r: r.info.start_time)
    assert newest.data.tags["nash.base_fingerprint"] == fp2

    name = "nash-smoke"
    versions = client.search_model_versions(f"name='{name}'")
    by_fp = {v.tags.get("nash.base_fingerprint") for v in versions}
    assert {fp1, fp2} <= by_fp, "the previous champion keeps its version"
    # the new selection is the challenger; the promotion gate decides whether it is champion
    decision = newest.data.tags["nash.promotion.decision"]
    assert decision in ("promoted", "kept champion"), newest.data.tags["nash.promotion.reason"]
    new = client.get_model_version_by_alias(
        name, "champion" if decision == "promoted" else "challenger"
    )
    assert new.tags["nash.base_fingerprint"] == fp2
    decided = newest.data.tags.get("nash.champion_run_id")
    if decided:
        assert new.run_id == decided
