"""Candidates as MLflow pyfunc models, the model registry and its aliases (not stages).

- writing: :func:`log_candidate_model` (a candidate's pyfunc model on its run),
  :func:`register_champion` (a registered version, re-used for the same result);
- reading a logged model back: :func:`model_weights`, :func:`fetch_model`;
- aliases (``champion``, ``challenger``, ``champion-<hardware>``): every move goes through
  :func:`move_alias`, which records who moved which alias from which version to which, when
  and why, as a registered-model tag (nash_core.promotion); :func:`alias_history`,
  :func:`promote`, :func:`rollback`, and :func:`select_for_hardware` (``nash select``).

Every command checks everything it can before it writes; a problem raises a
:class:`nash_mlflow.sweeps.SweepError` naming the culprit (the CLI exits 2).

The model is written with ``mlflow.pyfunc.save_model`` and uploaded with the client to the
candidate's run: the fluent ``log_model`` needs a thread-local active run, which Prefect's worker
threads do not share (see nash_mlflow/tracking.py). ``mlflow.transformers`` cannot log T5 on
transformers 5, hence the small PythonModel in nash_mlflow/pyfunc_model.py.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import socket
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import nash_core
from nash_core.promotion import (
    champion_alias,
    hardware_names,
    hardware_table,
    hw_metric,
    next_move_key,
    parse_moves,
    rollback_target,
)
from nash_mlflow import tracking
from nash_mlflow.model_check import FILES_KEY, check_model, record
from nash_mlflow.sweeps import SweepError, frame_of, label, load_sweep

MODEL_ARTIFACT = "model"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
#: What the served model imports; pinned to the versions it was built with (without local
#: build tags such as "+cpu", which no public index serves).
_REQUIREMENTS = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "pandas",
    "pydantic",
    "pyyaml",
    "numpy",
    "mlflow",
    "sentencepiece",
    "ctranslate2",
)


def pip_requirements() -> list[str]:
    """Explicit requirements (MLflow's inference of them takes seconds and guesses)."""
    reqs = []
    for dist in _REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def log_candidate_model(
    client: MlflowClient, run_id: str, model_dir: str | Path, model_config: dict[str, Any]
) -> str:
    """Log ``model_dir`` as a pyfunc summariser under the run's ``model/``; return its URI."""
    signature = infer_signature(
        pd.DataFrame({"source": ["a dialogue"]}),
        pd.DataFrame({"summary": ["a summary"], "source_tokens": [3], "source_truncated": [False]}),
    )
    with tempfile.TemporaryDirectory(prefix="nash-pyfunc-") as tmp, warnings.catch_warnings():
        # MLflow nags for an input example; the explicit signature covers it, and an example
        # would load and run the model at logging time. (Its type-hint nag is answered by the
        # DataFrame hint on predict: a filter here cannot catch it, since MLflow's own
        # filter_user_warnings_once puts a "once" filter in front of ours.)
        warnings.filterwarnings("ignore", message=".*input example.*")
        local = Path(tmp) / MODEL_ARTIFACT
        mlflow.pyfunc.save_model(
            str(local),
            python_model=str(PYFUNC_CODE),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(Path(nash_core.__file__).parent)],
            model_config={**model_config, FILES_KEY: record(model_dir)},
            signature=signature,
            pip_requirements=pip_requirements(),
        )
        client.log_artifacts(run_id, str(local), MODEL_ARTIFACT)
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def register_champion(
    client: MlflowClient,
    name: str,
    run_id: str,
    alias: str | None,
    tags: dict[str, Any],
    result_key: str,
) -> str:
    """Register the champion's model and point ``alias`` at it; return the version.

    ``alias`` None registers the version only (:func:`move_alias` moves aliases and records it).

    A re-run that picks the same result (same ``nash.result_key``) re-uses its version instead
    of piling up identical ones; earlier champions keep their versions either way.
    """
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="NASH sweep champions (alias marks the current one)"
        )
    same = [
        v
        for v in client.search_model_versions(f"name='{name}'")
        if v.tags.get("nash.result_key") == result_key
    ]
    if same:
        version = max(same, key=lambda v: int(v.version)).version
    else:
        source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
        version = client.create_model_version(name, source=source, run_id=run_id).version
    for k, v in {**tags, "nash.result_key": result_key, "nash.run_id": run_id}.items():
        if v is not None:
            client.set_model_version_tag(name, version, k, str(v))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def serving_config(cfg) -> dict[str, Any]:
    """``model_config`` of the pyfunc: the training-time prefix and the sweep's decoding."""
    return {
        "source_prefix": cfg.data.source_prefix,
        "max_source_length": cfg.data.max_source_length,
        "evaluation": cfg.evaluation.model_dump(mode="json"),
        "device": cfg.experiment.device,
    }


# ----------------------------------------------------------------------- a logged model read back
def model_weights(client: MlflowClient, run: Run) -> tuple[str, str | None]:
    """Where the run's logged pyfunc model keeps the weights (``model/artifacts/<dir>``, read
    from its MLmodel) and its ``quantize`` setting; a SweepError when either is missing."""
    missing = (
        f"candidate run '{label(run)}' ({run.info.run_id}) has no usable model artifact "
        f"({MODEL_ARTIFACT}/"
    )
    with tempfile.TemporaryDirectory(prefix="nash-mlmodel-") as tmp:
        try:
            mlmodel = yaml.safe_load(
                Path(
                    client.download_artifacts(run.info.run_id, f"{MODEL_ARTIFACT}/MLmodel", tmp)
                ).read_text()
            )
            flavor = mlmodel["flavors"]["python_function"]
            weights = f"{MODEL_ARTIFACT}/{flavor['artifacts']['model_dir']['path']}"
        except (MlflowException, OSError, ValueError, KeyError, TypeError):
            raise SweepError(
                missing + "MLmodel is missing or unreadable): its model cannot "
                "be fetched; re-run the sweep to log it again"
            ) from None
    try:
        found = client.list_artifacts(run.info.run_id, weights)
    except (MlflowException, OSError):
        found = []
    if not any(f.path.endswith("config.json") for f in found):
        raise SweepError(
            missing + f"{weights.split('/', 1)[1]} has no weights): its model "
            "cannot be fetched; re-run the sweep to log it again"
        )
    return weights, (flavor.get("config") or {}).get("quantize")


def check_model_artifacts(client: MlflowClient, runs: list[Run]) -> None:
    """Every run has its logged model and weights (before anything is downloaded or timed)."""
    for r in runs:
        model_weights(client, r)


def fetch_model(client: MlflowClient, run: Run, dest: Path) -> Path:
    """Download a candidate run's weights; a precision variant (int8, bf16, fp16) becomes a
    variant marker dir next to them (the sweep measured it the same way)."""
    weights, quantize = model_weights(client, run)
    try:
        path = Path(client.download_artifacts(run.info.run_id, weights, str(dest)))
    except (MlflowException, OSError) as exc:
        raise SweepError(
            f"cannot download the model of candidate run '{label(run)}' ({run.info.run_id}): {exc}"
        ) from None
    check_model(client, run.info.run_id, path)  # a damaged artifact: ModelError naming the version
    from nash_core.runtimes.ct2 import is_ct2_dir

    if quantize and not is_ct2_dir(path):  # a converted runtime dir is served as it is
        from nash_core.quantize import quantize_dir

        return quantize_dir(path, dest / quantize, quantize)
    return path


# --------------------------------------------------------------------------- hardware names
def check_hardware_name(name: str, alias: str = "champion") -> str:
    """``name`` if MLflow accepts ``hw/<name>/...`` as a metric key and ``<alias>-<name>`` as a
    model alias, else a SweepError saying which characters are allowed."""
    from mlflow.utils.validation import (
        _validate_metric_name,
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
    )

    try:
        if not name or "/" in name:
            raise MlflowException("empty or contains '/'")
        _validate_metric_name(hw_metric(name, "latency_p50_ms_bs1"))
        _validate_model_alias_name(champion_alias(name, alias))
        _validate_model_alias_name_reserved(champion_alias(name, alias))
    except MlflowException as exc:
        raise SweepError(
            f"hardware name {name!r} cannot be used: MLflow rejects it in metric "
            f"keys or model aliases (use letters, digits, '_' and '-'): "
            f"{exc.message if hasattr(exc, 'message') else exc}"
        ) from None
    return name


# --------------------------------------------------------------------------- champion per hardware
def select_for_hardware(tracking_uri: str, run_id: str, hardware: str) -> dict:
    """Apply the sweep's selection policy to ``hardware``'s figures and point
    ``champion-<hardware>`` at the winner (registered like the sweep's own champion)."""
    from nash_core.report import write_decision
    from nash_core.selection import latency_column

    check_hardware_name(hardware)
    client = tracking.make_client(tracking_uri)
    sweep = load_sweep(client, run_id, tracking_uri)
    cfg = sweep.cfg
    if not cfg.registry.enabled:
        raise SweepError(f"sweep run '{run_id}' has registry.enabled false: nothing to register")
    frame = frame_of(sweep.candidates)
    lat = latency_column(cfg.selection)
    if hw_metric(hardware, lat) not in frame.columns:
        known = hardware_names(frame.columns)
        raise SweepError(
            f"sweep run '{run_id}' has no figures for hardware {hardware!r} "
            f"(it has: {', '.join(known) or 'none'}): run `nash benchmark --sweep "
            f"{run_id} --hardware-name {hardware}` on that machine first"
        )
    with tempfile.TemporaryDirectory(prefix="nash-select-") as tmp:
        title = f"{cfg.experiment.name} on {hardware}"
        written = write_decision(hardware_table(frame, hardware), cfg.selection, tmp, title)
        moved, version = _register_for_hardware(client, sweep, hardware, written.decision)
        tracking.log_files(client, run_id, written.files, f"hardware/{hardware}")
    decision = written.decision
    tracking.set_tags(
        client,
        run_id,
        {
            f"nash.champion.{hardware}": decision.label,
            f"nash.registered_version.{hardware}": version,
        },
    )
    return {
        "model": cfg.registered_model_name(),
        "alias": champion_alias(hardware, cfg.registry.alias),
        "version": version,
        "label": decision.label,
        "reason": decision.reason,
        "moved": moved,
    }


def _register_for_hardware(client, sweep, hardware: str, decision) -> tuple[bool, str]:
    """Register the hardware's winner and move ``champion-<hardware>`` to it."""
    cfg, run_id = sweep.cfg, sweep.run_id
    winner = next(r for r in sweep.candidates if r.info.run_id == decision.run_id)
    check_model_artifacts(client, [winner])
    name = cfg.registered_model_name()
    alias = champion_alias(hardware, cfg.registry.alias)
    tags = {
        "nash.label": decision.label,
        "nash.sweep_run_id": run_id,
        "nash.config_name": cfg.experiment.name,
        f"nash.decision_reason.{hardware}": decision.reason[:5000],
    }
    version = register_champion(
        client,
        name,
        decision.run_id,
        None,
        tags,
        winner.data.tags.get("nash.result_key") or decision.run_id,
    )
    moved = move_alias(
        client,
        name,
        alias,
        version,
        kind="select",
        why=f"nash select --hardware {hardware} on sweep {run_id}: "
        f"{decision.label}: {decision.reason}",
    )
    return moved, version


# --------------------------------------------------------------------------- aliases
def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def alias_version(client: MlflowClient, model: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def move_alias(
    client: MlflowClient, model: str, alias: str, version: str | None, *, why: str, kind: str
) -> bool:
    """Point ``alias`` at ``version`` (None: remove it) and record the move; False when it
    already pointed there (nothing moved, nothing recorded)."""
    current = alias_version(client, model, alias)
    version = None if version is None else str(version)
    if current == version:
        return False
    if version is None:
        client.delete_registered_model_alias(model, alias)
    else:
        client.set_registered_model_alias(model, alias, version)
    tags = client.get_registered_model(model).tags
    record = {
        "alias": alias,
        "from": current,
        "to": version,
        "who": _who(),
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "why": why[:2000],
        "kind": kind,
    }
    client.set_registered_model_tag(model, next_move_key(tags), json.dumps(record))
    return True


def alias_history(client: MlflowClient, model: str) -> list[dict]:
    return parse_moves(client.get_registered_model(model).tags)


def resolve_model(client: MlflowClient, model: str | None, uri: str) -> str:
    """``model`` if registered, else the store's only registered model."""
    names = sorted(m.name for m in client.search_registered_models(max_results=1000))
    if model:
        if model not in names:
            raise SweepError(
                f"no registered model {model!r} in {uri} (registered: {', '.join(names) or 'none'})"
            )
        return model
    if len(names) != 1:
        raise SweepError(
            f"{'no registered model' if not names else 'several registered models'}"
            f" in {uri}{': ' + ', '.join(names) if names else ''}; "
            "name one with --model"
        )
    return names[0]


def promote(
    tracking_uri: str,
    version: str,
    *,
    model: str | None = None,
    alias: str = "champion",
    challenger: str = "challenger",
    why: str | None = None,
) -> dict:
    """Point ``alias`` at ``version``; a version that was the challenger stops being one."""
    client = tracking.make_client(tracking_uri)
    model = resolve_model(client, model, tracking_uri)
    versions = sorted(
        (str(v.version) for v in client.search_model_versions(f"name='{model}'")), key=int
    )
    if str(version) not in versions:
        raise SweepError(
            f"{model} has no version {version!r} (versions: {', '.join(versions) or 'none'})"
        )
    before = alias_version(client, model, alias)
    why = why or f"nash promote {version}"
    moved = move_alias(client, model, alias, str(version), why=why, kind="promote")
    if alias_version(client, model, challenger) == str(version):
        move_alias(client, model, challenger, None, why=f"promoted to {alias}", kind="promote")
    return {"model": model, "alias": alias, "from": before, "to": str(version), "moved": moved}


def rollback(
    tracking_uri: str, *, model: str | None = None, alias: str = "champion", why: str | None = None
) -> dict:
    """Point ``alias`` back at the version it pointed at before the current one."""
    client = tracking.make_client(tracking_uri)
    model = resolve_model(client, model, tracking_uri)
    current = alias_version(client, model, alias)
    if current is None:
        raise SweepError(f"{model} has no {alias!r} alias: nothing to roll back")
    target = rollback_target(alias_history(client, model), alias, current)
    if target is None:
        raise SweepError(
            f"{model}@{alias} (version {current}) has no earlier {alias} to roll back to"
        )
    move_alias(
        client,
        model,
        alias,
        target,
        why=why or f"nash rollback from version {current}",
        kind="rollback",
    )
    return {"model": model, "alias": alias, "from": current, "to": target}
