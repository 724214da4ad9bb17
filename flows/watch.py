"""Retrain when the base model changes: ``nash watch CONFIG`` and the schedulable ``nash-watch``
flow.

The base model's fingerprint (hub: the commit its revision resolves to; local directory: a
content hash of its config, weights and tokenizer files; demo: a hash of its recipe) is compared
with the ``nash.base_fingerprint`` tag of the registered model version the ``champion`` alias
points at. Different, or no champion yet: the sweep runs (its runs carry the new fingerprint;
the old champion keeps its version; the new selection becomes the ``challenger`` and replaces the
champion only through the promotion gate, tasks/promotion.py). Equal to the champion's or to the
challenger's: nothing starts.

Import after the environment is prepared (nash_cli.sweep.prepare_environment): this imports prefect.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.sweep_flow import run_configured
from nash_core.config import NashConfig, load_config

FINGERPRINT_TAG = "nash.base_fingerprint"


def base_fingerprint(cfg: NashConfig, workdir: str | Path) -> str:
    """The fingerprint the sweep would record for this config's base model, computed cheaply.

    Reads no weights into memory for hub/local models (hashes files or asks the hub for the
    commit); for the demo it prepares (or reuses) the data splits the recipe hash depends on.
    """
    from tasks.preflight import base_source_fingerprint

    if cfg.model.base == "demo":
        from nash_core.base_model import fingerprint_base
        from nash_core.data import prepare_splits, splits_fingerprint

        splits = prepare_splits(cfg.data, Path(workdir) / "data")
        return fingerprint_base(
            cfg.model,
            "demo",
            data_cfg=cfg.data,
            splits_fp=splits_fingerprint(splits),
            seed=cfg.experiment.seed,
        )
    return base_source_fingerprint(cfg.model)


def champion_fingerprint(
    cfg: NashConfig, workdir: str | Path, alias: str | None = None
) -> str | None:
    """The base fingerprint recorded on the current champion (or on the version ``alias``
    points at), or None when there is none."""
    from mlflow.exceptions import MlflowException

    from nash_mlflow.tracking import make_client, resolve_tracking_uri

    client = make_client(resolve_tracking_uri(cfg, workdir))
    try:
        version = client.get_model_version_by_alias(
            cfg.registered_model_name(), alias or cfg.registry.alias
        )
    except MlflowException:
        return None
    return version.tags.get(FINGERPRINT_TAG)


@flow(name="nash-watch", log_prints=True)
def watch_flow(
    config_path: str, overrides: list[str], workdir: str, cfg: NashConfig | None = None
) -> dict:
    """Run the sweep only if the base model's fingerprint differs from the champion's.

    Returns ``{"changed", "previous", "fingerprint", "sweep"}`` (``sweep``: the sweep's summary,
    None when unchanged); :func:`describe` turns it into the line ``nash watch`` prints.
    """
    cfg = cfg or load_config(config_path, overrides)  # None: a scheduled run loads it here
    new = base_fingerprint(cfg, workdir)
    old = champion_fingerprint(cfg, workdir)
    # a challenger the promotion gate kept out (or awaiting `nash promote`) was trained on it
    pending = champion_fingerprint(cfg, workdir, cfg.registry.challenger_alias)
    result = {
        "changed": new not in (old, pending),
        "previous": old,
        "fingerprint": new,
        "challenger": pending == new != old,
        "sweep": None,
    }
    get_run_logger().info(describe(result))
    if result["changed"]:
        result["sweep"] = run_configured(config_path, overrides, workdir, cfg)
    return result


def describe(result: dict) -> str:
    """``unchanged: FP`` or ``changed: OLD -> NEW`` (``<no champion>`` before the first sweep)."""
    if not result["changed"]:
        waiting = " (its model is the challenger: see the sweep's promotion decision)"
        return f"unchanged: {result['fingerprint']}" + (waiting if result.get("challenger") else "")
    return f"changed: {result['previous'] or '<no champion>'} -> {result['fingerprint']}"
