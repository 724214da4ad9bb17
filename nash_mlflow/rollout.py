"""After a sweep: re-benchmark it on another machine, a champion per hardware, alias moves.

``nash benchmark --sweep``, ``nash select --hardware``, ``nash promote`` and ``nash rollback``
run here; so do the MLflow halves of the promotion gate (tasks/promotion.py runs it in the
sweep). MLflow only, no Prefect: these commands start no flow server.

Every command checks everything it can before it writes: the run exists and is a finished
sweep, the hardware name is one MLflow accepts as a metric key and an alias, every model
artifact is there. A problem raises a NashError naming the culprit (the CLI exits 2), and
nothing has been logged.

Alias moves (``champion``, ``challenger``, ``champion-<hardware>``) go through
:func:`move_alias`, which records who moved which alias from which version to which, when and
why, as a registered-model tag (nash_core.promotion).
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import socket
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
from nash_core.io import atomic_write_json, atomic_write_text
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
from nash_mlflow.registry import MODEL_ARTIFACT, register_champion

#: The sweep run's record of the texts its benchmark timed (tasks/measure.py logs it).
INPUTS_ARTIFACT = "benchmark/inputs.json"
CONFIG_ARTIFACT = "config.yaml"
QUALITY = "rougeL"


class RolloutError(NashError):
    """A run, model, version or hardware name that a rollout command cannot use."""


# --------------------------------------------------------------------------- the sweep
@dataclass
class Sweep:
    run: Run
    cfg: NashConfig
    candidates: list[Run]  # teacher first, then in the order the sweep created them

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def _get_run(client: MlflowClient, run_id: str, uri: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise RolloutError(
                f"no run '{run_id}' in the MLflow store {uri}: pass the id of a "
                "sweep run (the parent run `nash run` prints and the UI shows), "
                "and check MLFLOW_TRACKING_URI / --tracking-uri"
            ) from None
        raise TrackingError(f"cannot read run '{run_id}' from {uri}: {exc}") from None


def load_sweep(client: MlflowClient, run_id: str, uri: str) -> Sweep:
    """The finished sweep ``run_id`` with its resolved config and candidate runs."""
    run = _get_run(client, run_id, uri)
    tags = run.data.tags
    kind = tags.get(tracking.KIND)
    if kind != "sweep":
        parent = tags.get(tracking.PARENT_TAG)
        hint = f"; it belongs to sweep run {parent}, pass that id" if parent else ""
        raise RolloutError(
            f"run '{run_id}' is not a nash sweep run (its {tracking.KIND} tag is "
            f"{kind!r}, a sweep's is 'sweep'){hint}"
        )
    if run.info.status != "FINISHED":
        raise RolloutError(
            f"sweep run '{run_id}' is {run.info.status}, not FINISHED: only a "
            "finished sweep has every candidate's model and figures"
        )
    with tempfile.TemporaryDirectory(prefix="nash-sweep-") as tmp:
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            cfg = NashConfig.model_validate(yaml.safe_load(Path(path).read_text()))
        except (MlflowException, OSError, ValueError) as exc:
            raise RolloutError(
                f"sweep run '{run_id}' has no readable {CONFIG_ARTIFACT} artifact "
                f"(the resolved config every sweep logs): {exc}"
            ) from None
    children = client.search_runs(
        [run.info.experiment_id],
        f"tags.`{tracking.PARENT_TAG}` = '{run_id}' and tags.`{tracking.KIND}` = 'candidate'",
        max_results=1000,
        order_by=["attributes.start_time ASC"],
    )
    children = sorted(
        children, key=lambda r: (r.data.tags.get(tracking.METHOD) != "teacher", r.info.start_time)
    )
    if not children or children[0].data.tags.get(tracking.METHOD) != "teacher":
        raise RolloutError(f"sweep run '{run_id}' has no teacher candidate run")
    return Sweep(run, cfg, children)


def label(run: Run) -> str:
    return run.data.tags.get(tracking.LABEL, run.info.run_id)


def candidate_frame(sweep: Sweep) -> pd.DataFrame:
    """One row per candidate run: label, method, run_id, the decoder depth and every metric."""
    rows = []
    for r in sweep.candidates:
        rows.append(
            {
                "run_id": r.info.run_id,
                "label": label(r),
                "method": r.data.tags.get(tracking.METHOD),
                "result_key": r.data.tags.get("nash.result_key"),
                "decoder_layers": r.data.params.get("decoder_layers"),
                "target_sparsity": r.data.params.get("target_sparsity"),
                "stage": r.data.params.get("stage"),
                **r.data.metrics,
            }
        )
    return pd.DataFrame(rows)


def model_weights(client: MlflowClient, run: Run) -> tuple[str, str | None]:
    """Where the run's logged pyfunc model keeps the weights (``model/artifacts/<dir>``, read
    from its MLmodel) and its ``quantize`` setting; a RolloutError when either is missing."""
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
            raise RolloutError(
                missing + "MLmodel is missing or unreadable): its model cannot "
                "be fetched; re-run the sweep to log it again"
            ) from None
    try:
        found = client.list_artifacts(run.info.run_id, weights)
    except (MlflowException, OSError):
        found = []
    if not any(f.path.endswith("config.json") for f in found):
        raise RolloutError(
            missing + f"{weights.split('/', 1)[1]} has no weights): its model "
            "cannot be fetched; re-run the sweep to log it again"
        )
    return weights, (flavor.get("config") or {}).get("quantize")


def _rechoose_threads(dirs: list[Path], inputs: dict, cfg) -> None:
    from nash_core.runtimes.ct2 import choose_threads, is_ct2_dir

    for d in dirs:
        if is_ct2_dir(d):
            choose_threads(
                d,
                inputs["texts"],
                cfg.evaluation,
                cfg.benchmark.batch_sizes,
                inputs.get("max_source_length"),
            )


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
        raise RolloutError(
            f"cannot download the model of candidate run '{label(run)}' ({run.info.run_id}): {exc}"
        ) from None
    from nash_core.runtimes.ct2 import is_ct2_dir

    if quantize and not is_ct2_dir(path):  # a converted runtime dir is served as it is
        from nash_core.quantize import quantize_dir

        return quantize_dir(path, dest / quantize, quantize)
    return path


# --------------------------------------------------------------------------- hardware names
def check_hardware_name(name: str, alias: str = "champion") -> str:
    """``name`` if MLflow accepts ``hw/<name>/...`` as a metric key and ``<alias>-<name>`` as a
    model alias, else a RolloutError saying which characters are allowed."""
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
        raise RolloutError(
            f"hardware name {name!r} cannot be used: MLflow rejects it in metric "
            f"keys or model aliases (use letters, digits, '_' and '-'): "
            f"{exc.message if hasattr(exc, 'message') else exc}"
        ) from None
    return name


# --------------------------------------------------------------------------- re-benchmark
def _quality_eligible(runs, sel) -> list[str]:
    """Labels of the candidate runs non-inferior in quality (the first run is the teacher):
    the only ones a re-benchmark's adaptive rounds spend time on."""
    from nash_core.selection import quality_reasons

    teacher_q = runs[0].data.metrics.get("rougeL", float("nan"))
    return [label(r) for r in runs[1:] if not quality_reasons(r.data.metrics, teacher_q, sel)]


def rebenchmark_sweep(
    tracking_uri: str,
    run_id: str,
    *,
    hardware_name: str | None = None,
    price_per_hour: float | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> dict:
    """Time the sweep's teacher and candidates on this machine and log the figures under a
    hardware name (nothing of the sweep's own figures is overwritten).

    Same protocol and inputs as the sweep: its benchmark settings and decoding (from its
    resolved config), the texts its benchmark timed (``benchmark/inputs.json``), the teacher
    as the baseline, all models interleaved in this process.
    """
    import torch

    from nash_core.benchmark import benchmark_models, flat_metrics, hardware_fingerprint
    from nash_core.promotion import default_hardware_name
    from nash_core.runtime import pick_device, set_threads

    if hardware_name is not None:
        check_hardware_name(hardware_name)
    if price_per_hour is not None and price_per_hour < 0:
        raise RolloutError(f"--price-per-hour {price_per_hour}: must be >= 0")
    client = tracking.make_client(tracking_uri)
    sweep = load_sweep(client, run_id, tracking_uri)
    cfg = sweep.cfg
    inputs = _benchmark_inputs(client, sweep)
    check_model_artifacts(client, sweep.candidates)
    set_threads(threads or cfg.experiment.torch_threads)  # the sweep's, unless told otherwise
    dev = pick_device(device or cfg.experiment.device)
    if "int8" in cfg.benchmark.all_variants:
        dev = torch.device("cpu")  # int8 dynamic quantisation runs on CPU only (as in the sweep)
    if hardware_name is None:
        hardware_name = check_hardware_name(
            default_hardware_name(hardware_fingerprint(dev, cfg.benchmark.dtype))
        )
    bench_cfg = cfg.benchmark.model_copy(
        update={
            "hardware_name": hardware_name,
            "price_per_hour": (
                cfg.benchmark.price_per_hour if price_per_hour is None else price_per_hour
            ),
        }
    )

    with tempfile.TemporaryDirectory(prefix="nash-rebench-") as tmp:
        tmp = Path(tmp)
        dirs = [fetch_model(client, r, tmp / f"m{i}") for i, r in enumerate(sweep.candidates)]
        names = [label(r) for r in sweep.candidates]
        _rechoose_threads(dirs, inputs, cfg)  # a converted model's threads, for THIS machine
        result = benchmark_models(
            dirs,
            bench_cfg,
            cfg.evaluation,
            texts=inputs["texts"],
            max_source_length=inputs.get("max_source_length"),
            device=dev,
            names=names,
            seed=cfg.experiment.seed,
            adaptive_batch=cfg.selection.batch_size,
            eligible=_quality_eligible(sweep.candidates, cfg.selection),
        )
        for m in result["models"]:
            m.pop("dir", None)  # a temporary path on this machine
        sel_bs = cfg.selection.batch_size
        logged = {}
        for run, model in zip(sweep.candidates, result["models"]):
            flat = flat_metrics(model)
            for name in (
                "latency_p50_ms",
                "latency_p90_ms",
                "speedup",
                "tokens_per_s",
                "peak_mem_mb",
                "cost_per_1k_requests",
                "ms_per_token",
            ):
                if f"{name}_bs{sel_bs}" in flat:
                    flat[name] = flat[f"{name}_bs{sel_bs}"]
            metrics = {hw_metric(hardware_name, k): v for k, v in flat.items()}
            tracking.log_metrics(client, run.info.run_id, metrics)
            single = atomic_write_json(
                tmp / "runs" / label(run) / "benchmark.json",
                {**{k: v for k, v in result.items() if k != "models"}, "model": model},
            )
            client.log_artifact(run.info.run_id, str(single), f"hardware/{hardware_name}")
            tracking.set_tags(
                client,
                run.info.run_id,
                {f"nash.hardware.{hardware_name}": _hw_line(result["hardware"])},
            )
            logged[label(run)] = metrics
        files = _hardware_report(client, sweep, hardware_name, result, tmp / "sweep")
        tracking.set_tags(
            client,
            sweep.run_id,
            {
                f"nash.hardware.{hardware_name}": _hw_line(result["hardware"]),
                "nash.hardware_names": ",".join(
                    sorted(
                        set(
                            (sweep.run.data.tags.get("nash.hardware_names") or "").split(",")
                            + [hardware_name]
                        )
                        - {""}
                    )
                ),
            },
        )
    return {
        "hardware_name": hardware_name,
        "sweep_run_id": run_id,
        "result": result,
        "metrics": logged,
        "files": files,
    }


def _hw_line(hw: dict) -> str:
    return (
        f"{hw.get('gpu_name') or hw.get('cpu_model')} | device {hw.get('device')} | "
        f"{hw.get('torch_threads')} torch threads | {hw.get('dtype')} | torch "
        f"{hw.get('torch_version')} | transformers {hw.get('transformers_version')}"
    )


def _benchmark_inputs(client: MlflowClient, sweep: Sweep) -> dict:
    with tempfile.TemporaryDirectory(prefix="nash-inputs-") as tmp:
        try:
            path = client.download_artifacts(sweep.run_id, INPUTS_ARTIFACT, tmp)
            inputs = json.loads(Path(path).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):
            raise RolloutError(
                f"sweep run '{sweep.run_id}' has no {INPUTS_ARTIFACT} (the texts "
                "its benchmark timed; sweeps record it since nash-pipeline can "
                "re-benchmark them): run the sweep again to re-benchmark it"
            ) from None
    if not inputs.get("texts"):
        raise RolloutError(f"sweep run '{sweep.run_id}': {INPUTS_ARTIFACT} holds no texts")
    return inputs


def _hardware_report(
    client: MlflowClient, sweep: Sweep, hardware: str, result: dict, out: Path
) -> list[str]:
    """Trade-off table, Pareto plot and the full benchmark (fingerprint included) of one
    hardware, logged on the sweep run under ``hardware/<name>/``."""
    from nash_core.report import pareto_plot, tradeoff_table, write_tradeoff
    from nash_core.selection import choose_champion, latency_column, pareto_frontier

    cfg = sweep.cfg
    table = hardware_table(candidate_frame(_reload(client, sweep)), hardware)
    lat = latency_column(cfg.selection)
    decision = choose_champion(table, cfg.selection)
    frontier = pareto_frontier(table, QUALITY, lat)
    trade = tradeoff_table(table, lat, frontier, decision.label)
    csv, md = write_tradeoff(trade, out)
    plot = pareto_plot(
        table,
        QUALITY,
        lat,
        frontier,
        decision.label,
        out / "pareto.png",
        title=f"{cfg.experiment.name} on {hardware}: {QUALITY} vs {lat}",
    )
    full = atomic_write_json(out / "benchmark.json", result)
    text = atomic_write_text(out / "decision.txt", decision.as_text())
    files = [csv, md, plot, full, text]
    tracking.log_files(client, sweep.run_id, files, f"hardware/{hardware}")
    return [f"hardware/{hardware}/{Path(f).name}" for f in files]


def _reload(client: MlflowClient, sweep: Sweep) -> Sweep:
    return Sweep(sweep.run, sweep.cfg, [client.get_run(r.info.run_id) for r in sweep.candidates])


# --------------------------------------------------------------------------- champion per hardware
def select_for_hardware(tracking_uri: str, run_id: str, hardware: str) -> dict:
    """Apply the sweep's selection policy to ``hardware``'s figures and point
    ``champion-<hardware>`` at the winner (registered like the sweep's own champion)."""
    from nash_core.selection import choose_champion, latency_column

    check_hardware_name(hardware)
    client = tracking.make_client(tracking_uri)
    sweep = load_sweep(client, run_id, tracking_uri)
    cfg = sweep.cfg
    if not cfg.registry.enabled:
        raise RolloutError(f"sweep run '{run_id}' has registry.enabled false: nothing to register")
    frame = candidate_frame(sweep)
    lat = latency_column(cfg.selection)
    if hw_metric(hardware, lat) not in frame.columns:
        known = hardware_names(frame.columns)
        raise RolloutError(
            f"sweep run '{run_id}' has no figures for hardware {hardware!r} "
            f"(it has: {', '.join(known) or 'none'}): run `nash benchmark --sweep "
            f"{run_id} --hardware-name {hardware}` on that machine first"
        )
    decision = choose_champion(hardware_table(frame, hardware), cfg.selection)
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
    with tempfile.TemporaryDirectory(prefix="nash-select-") as tmp:
        text = atomic_write_text(Path(tmp) / "decision.txt", decision.as_text())
        tracking.log_files(client, run_id, [text], f"hardware/{hardware}")
    tracking.set_tags(
        client,
        run_id,
        {
            f"nash.champion.{hardware}": decision.label,
            f"nash.registered_version.{hardware}": version,
        },
    )
    return {
        "model": name,
        "alias": alias,
        "version": version,
        "label": decision.label,
        "reason": decision.reason,
        "moved": moved,
    }


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
            raise RolloutError(
                f"no registered model {model!r} in {uri} (registered: {', '.join(names) or 'none'})"
            )
        return model
    if len(names) != 1:
        raise RolloutError(
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
        raise RolloutError(
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
        raise RolloutError(f"{model} has no {alias!r} alias: nothing to roll back")
    target = rollback_target(alias_history(client, model), alias, current)
    if target is None:
        raise RolloutError(
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
