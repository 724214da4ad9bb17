"""Candidates as MLflow pyfunc models, and the champion in the model registry (aliases, not stages).

The model is written with ``mlflow.pyfunc.save_model`` and uploaded with the client to the
candidate's run: the fluent ``log_model`` needs a thread-local active run, which Prefect's worker
threads do not share (see nash_mlflow/tracking.py). ``mlflow.transformers`` cannot log T5 on
transformers 5, hence the small PythonModel in nash_mlflow/pyfunc_model.py.
"""

from __future__ import annotations

import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import nash_core

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
    signature = infer_signature(pd.DataFrame({"source": ["a dialogue"]}), ["a summary"])
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
            model_config=model_config,
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

    ``alias`` None registers the version only (nash_mlflow/rollout.py moves aliases and records it).

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
