"""A sweep read back from MLflow: THE sweep reader and THE candidate-row reader.

Everything after a sweep (``nash report``, ``nash benchmark --sweep``, ``nash select``, the
sweep's own champion selection) reads it through here, so they all see the same rows:

- :func:`find_sweep`: the sweep run of an id (a candidate's id leads to its sweep when asked),
  or the latest sweep of the store;
- :func:`load_sweep`: a finished sweep with its resolved config and candidate runs (teacher
  first, then in the order the sweep created them);
- :func:`candidate_frame`: one row per candidate run -- ``run_id``, ``label``, ``method``,
  ``result_key``, ``decoder_layers`` / ``target_sparsity`` / ``stage`` (numbers, NaN where a
  run has none, e.g. the teacher) and every metric under its own name.

MLflow only, no Prefect. Problems raise :class:`SweepError` (a NashError: exit 2) naming the
run and what to pass instead.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nash_core.config import NashConfig
from nash_core.errors import NashError, TrackingError
from nash_mlflow import tracking

CONFIG_ARTIFACT = "config.yaml"  # the resolved config every sweep logs
#: Run params that describe a candidate's shape; numbers in the frame (NaN when absent).
SHAPE_PARAMS = ("decoder_layers", "target_sparsity", "stage")


class SweepError(NashError):
    """A run, sweep, model, version or hardware name that a command after a sweep cannot use."""


@dataclass
class Sweep:
    run: Run
    cfg: NashConfig
    candidates: list[Run]  # teacher first, then in the order the sweep created them

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def label(run: Run) -> str:
    """A candidate run's label: its ``nash.label`` tag, else its run name, else its id."""
    return run.data.tags.get(tracking.LABEL) or run.info.run_name or run.info.run_id


# --------------------------------------------------------------------------- finding a sweep
def _get_run(client: MlflowClient, run_id: str, uri: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise SweepError(
                f"no run '{run_id}' in the MLflow store {uri}: pass the run id `nash run` "
                "printed (or --tracking-uri / --workdir of the store it used)"
            ) from None
        raise TrackingError(f"cannot read run '{run_id}' from {uri}: {exc}") from None


def find_sweep(
    client: MlflowClient, uri: str, run_id: str | None = None, *, follow_candidate: bool = True
) -> Run:
    """The sweep run ``run_id`` (with ``follow_candidate``, a candidate's id leads to its
    sweep), else the store's latest sweep."""
    if not run_id:
        return _latest_sweep(client, uri)
    run = _get_run(client, run_id, uri)
    tags = run.data.tags
    kind, parent = tags.get(tracking.KIND), tags.get(tracking.PARENT_TAG)
    if kind == "candidate" and parent and follow_candidate:
        return find_sweep(client, uri, parent, follow_candidate=False)
    if kind != "sweep":
        hint = f"; it belongs to sweep run {parent}, pass that id" if parent else ""
        raise SweepError(
            f"run '{run_id}' in {uri} is not a nash sweep run (its {tracking.KIND} tag is "
            f"{kind!r}, a sweep's is 'sweep'){hint}"
        )
    return run


def _latest_sweep(client: MlflowClient, uri: str) -> Run:
    try:
        exps = [e.experiment_id for e in client.search_experiments()]
        runs = (
            client.search_runs(
                exps,
                f"tags.`{tracking.KIND}` = 'sweep'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if exps
            else []
        )
    except MlflowException as exc:
        raise SweepError(f"cannot read the MLflow store {uri}: {exc}") from None
    if not runs:
        raise SweepError(
            f"no NASH sweep in the MLflow store {uri}: run `nash run "
            "CONFIG` first, or pass --workdir / --tracking-uri of another store"
        )
    return runs[0]


def candidate_runs(client: MlflowClient, experiment_id: str, sweep_run_id: str) -> list[Run]:
    """The sweep's candidate runs: the teacher first, then in the order they were opened."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{tracking.PARENT_TAG}` = '{sweep_run_id}' and tags.`{tracking.KIND}` = 'candidate'",
        max_results=1000,
        order_by=["attributes.start_time ASC"],
    )
    return sorted(
        runs, key=lambda r: (r.data.tags.get(tracking.METHOD) != "teacher", r.info.start_time)
    )


def load_sweep(client: MlflowClient, run_id: str, uri: str) -> Sweep:
    """The finished sweep ``run_id`` with its resolved config and candidate runs."""
    run = find_sweep(client, uri, run_id, follow_candidate=False)
    if run.info.status != "FINISHED":
        raise SweepError(
            f"sweep run '{run_id}' is {run.info.status}, not FINISHED: only a "
            "finished sweep has every candidate's model and figures"
        )
    with tempfile.TemporaryDirectory(prefix="nash-sweep-") as tmp:
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            cfg = NashConfig.model_validate(yaml.safe_load(Path(path).read_text()))
        except (MlflowException, OSError, ValueError) as exc:
            raise SweepError(
                f"sweep run '{run_id}' has no readable {CONFIG_ARTIFACT} artifact "
                f"(the resolved config every sweep logs): {exc}"
            ) from None
    children = candidate_runs(client, run.info.experiment_id, run_id)
    if not children or children[0].data.tags.get(tracking.METHOD) != "teacher":
        raise SweepError(f"sweep run '{run_id}' has no teacher candidate run")
    return Sweep(run, cfg, children)


def reload(client: MlflowClient, sweep: Sweep) -> Sweep:
    """The same sweep with its candidate runs read again (after metrics were logged)."""
    return Sweep(sweep.run, sweep.cfg, [client.get_run(r.info.run_id) for r in sweep.candidates])


# --------------------------------------------------------------------------- the rows
def frame_of(runs: list[Run]) -> pd.DataFrame:
    """One row per candidate run (see the module docstring)."""
    rows = [
        {
            "run_id": r.info.run_id,
            "label": label(r),
            "method": r.data.tags.get(tracking.METHOD, ""),
            "result_key": r.data.tags.get("nash.result_key"),
            **{p: pd.to_numeric(r.data.params.get(p), errors="coerce") for p in SHAPE_PARAMS},
            **r.data.metrics,
        }
        for r in runs
    ]
    return pd.DataFrame(rows)


def candidate_frame(client: MlflowClient, experiment_id: str, sweep_run_id: str) -> pd.DataFrame:
    """One row per candidate run of the sweep ``sweep_run_id``, the teacher first."""
    return frame_of(candidate_runs(client, experiment_id, sweep_run_id))
