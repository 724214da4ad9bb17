"""``nash benchmark --sweep``: time a finished sweep's teacher and candidates on this machine.

Same protocol and inputs as the sweep: its benchmark settings and decoding (from its resolved
config), the texts its benchmark timed (``benchmark/inputs.json``), the teacher as the baseline,
all models interleaved in one process. The figures go to the same candidate runs as
``hw/<name>/<metric>`` (the sweep's own figures stay), with a trade-off table, Pareto plot,
decision and hardware fingerprint on the sweep run under ``hardware/<name>/``. ``nash select
--hardware <name>`` (:func:`nash_mlflow.registry.select_for_hardware`) then picks a champion
for that hardware. MLflow only, no Prefect.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nash_core.io import atomic_write_json
from nash_core.metrics import with_headline
from nash_core.promotion import hardware_table, hw_metric
from nash_mlflow import tracking
from nash_mlflow.registry import check_hardware_name, check_model_artifacts, fetch_model
from nash_mlflow.sweeps import Sweep, SweepError, frame_of, label, load_sweep, reload

#: The sweep run's record of the texts its benchmark timed (tasks/measure.py logs it).
INPUTS_ARTIFACT = "benchmark/inputs.json"


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
        raise SweepError(f"--price-per-hour {price_per_hour}: must be >= 0")
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
        logged = {}
        for run, model in zip(sweep.candidates, result["models"]):
            flat = with_headline(flat_metrics(model), cfg.selection.batch_size)
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
            raise SweepError(
                f"sweep run '{sweep.run_id}' has no {INPUTS_ARTIFACT} (the texts "
                "its benchmark timed; sweeps record it since nash-pipeline can "
                "re-benchmark them): run the sweep again to re-benchmark it"
            ) from None
    if not inputs.get("texts"):
        raise SweepError(f"sweep run '{sweep.run_id}': {INPUTS_ARTIFACT} holds no texts")
    return inputs


def _hardware_report(
    client: MlflowClient, sweep: Sweep, hardware: str, result: dict, out: Path
) -> list[str]:
    """Trade-off table, Pareto plot and the full benchmark (fingerprint included) of one
    hardware, logged on the sweep run under ``hardware/<name>/``."""
    from nash_core.report import write_decision

    table = hardware_table(frame_of(reload(client, sweep).candidates), hardware)
    written = write_decision(
        table, sweep.cfg.selection, out, f"{sweep.cfg.experiment.name} on {hardware}"
    )
    csv, md, plot, text = written.files
    files = [csv, md, plot, atomic_write_json(out / "benchmark.json", result), text]
    tracking.log_files(client, sweep.run_id, files, f"hardware/{hardware}")
    return [f"hardware/{hardware}/{Path(f).name}" for f in files]
