"""The sweep as a Prefect flow; it reads like the pipeline diagram.

    data -> base -> teacher -> evaluate(teacher)
                       \\-> for each arm (method x k, x experiment.seeds), on the task runner:
                            stage(t1) -> stage(t2) -> ...        (each continues the previous)
                               |            |
                           materialise  materialise -> fine-tune -> evaluate(vs teacher)
                       \\-> for each of benchmark.variants (int8, bf16...), teacher and candidates:
                            precision variant -> evaluate(vs teacher)
    benchmark(teacher first, all candidates, interleaved) -> log every candidate run
    -> select (Pareto, policy) -> register -> challenger -> promotion gate (vs the champion)
    -> publish (the sweep run's Markdown report, its metrics, the UI's saved views)

Import this module only after the environment is prepared (nash_cli/sweep.py does it): importing
prefect fixes PREFECT_HOME.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NamedTuple

from prefect import flow
from prefect.exceptions import TerminationSignal
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from nash_core.config import NashConfig, load_config
from nash_core.errors import NashError
from nash_core.runtime import request_stop, set_threads
from nash_core.runtimes import refused_variants
from nash_mlflow.registry import serving_config
from tasks.cache import StepResult
from tasks.candidates import log_candidate, log_replicate
from tasks.champion import register, select_champion
from tasks.context import CandidateSpec
from tasks.measure import (
    aggregate_seeds,
    benchmark,
    compare_with_sft,
    evaluate,
    quality_eligible,
)
from tasks.preflight import preflight
from tasks.prepare import get_teacher, prepare_base, prepare_data
from tasks.promotion import promote_challenger
from tasks.prune import finetune, materialize, prune_stage, quantize
from tasks.publish import publish_report
from tasks.sweep_runs import close_sweep, open_sweep, skip_variant


class Candidate(NamedTuple):
    """One candidate's steps (futures while the arms run, results after; an int8 variant has
    no stage or export of its own)."""

    spec: CandidateSpec
    stage: StepResult | None
    export: StepResult | None
    final: StepResult
    evaluation: StepResult

    def trained(self) -> dict[str, StepResult]:
        """The steps whose training curves belong on this candidate's run."""
        if self.spec.quantized:
            return {}
        return {"stage": self.stage, "finetune": self.final}

    def steps(self) -> list[StepResult]:
        return [s for s in self[1:] if s is not None]


def make_task_runner(cfg: NashConfig):
    """The task runner the arms go through -- the one place that chooses it.

    ``threads``: a thread pool of ``experiment.max_concurrent_arms`` workers (tasks are
    submitted in dependency order, so a worker waits only on work that already started);
    ``sequential``: the same with one worker;
    ``dask``: prefect-dask on the scheduler at ``experiment.dask_address``, else on a local
    cluster of ``experiment.dask_workers`` single-threaded worker processes;
    ``ray``: prefect-ray on the cluster ``RAY_ADDRESS`` names, else on a local Ray instance of
    ``experiment.ray_cpus`` CPUs (one arm per CPU), a small object store, no dashboard.
    Tasks get only small picklable arguments (paths, configs) and write through MlflowClient
    with explicit run ids, so a worker process -- on this machine or another -- needs only the
    same workdir path (shared storage) and a tracking URI every worker reaches.
    """
    exp = cfg.experiment
    if exp.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=exp.max_concurrent_arms)
    if exp.task_runner == "sequential":
        return ThreadPoolTaskRunner(max_workers=1)
    if exp.task_runner == "dask":
        runner = _optional_runner("prefect_dask", "DaskTaskRunner", "dask")
        if exp.dask_address:
            return runner(address=exp.dask_address)
        return runner(
            cluster_kwargs={
                "n_workers": exp.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    runner = _optional_runner("prefect_ray", "RayTaskRunner", "ray")
    if os.environ.get("RAY_ADDRESS"):  # a cluster's resources are its own
        return runner(address=os.environ["RAY_ADDRESS"])
    return runner(  # "local": a new instance even when `ray start` left one running here
        address="local",
        init_kwargs={
            "num_cpus": exp.ray_cpus,
            "object_store_memory": exp.ray_object_store_mb * 2**20,
            "include_dashboard": False,
        },
    )


def _optional_runner(module: str, name: str, extra: str):
    """A task runner class from an optional extra, or a NashError saying how to install it."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise NashError(
            f"experiment.task_runner '{extra}' needs {module.replace('_', '-')}, which "
            f"is not installed: pip install 'nash-pipeline[{extra}]' (or set "
            "experiment.task_runner to 'threads')"
        ) from None


@contextlib.contextmanager
def api_for_workers(cfg: NashConfig) -> Iterator[None]:
    """Give Dask / Ray worker processes the Prefect API the flow itself uses.

    Without ``PREFECT_API_URL`` a flow talks to a temporary server only its own process knows,
    and prefect-dask / prefect-ray ship the flow's settings to every task: each worker process
    then starts a temporary server of its own (about a minute on a busy machine, task runs
    scattered over several servers sharing one database). So for a local cluster the temporary
    server is started here and its URL put into the settings the tasks carry. Workers on other
    machines cannot reach this machine's loopback: they need a real server.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    exp = cfg.experiment
    if exp.task_runner not in ("dask", "ray") or get_current_settings().api.url:
        yield
        return
    remote = exp.dask_address if exp.task_runner == "dask" else os.environ.get("RAY_ADDRESS")
    if remote:
        raise NashError(
            f"the {exp.task_runner} cluster at {remote} needs a Prefect server its "
            "workers can reach, and PREFECT_API_URL is unset: start one (`prefect "
            "server start --host 0.0.0.0`) and export PREFECT_API_URL=http://HOST:4200"
            "/api here and on the workers (README, Scaling out)"
        )
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance a flow without PREFECT_API_URL would use
    server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


@flow(name="nash-sweep", log_prints=True)
def sweep_flow(
    config_path: str, overrides: list[str], workdir: str, cfg: NashConfig | None = None
) -> dict:
    """The pipeline. ``cfg``: the config already loaded from ``config_path`` + ``overrides``
    (``nash run`` parses the YAML once); None (a scheduled run) loads it here."""
    cfg = cfg or load_config(config_path, overrides)
    set_threads(cfg.experiment.torch_threads)
    for (arm, variant), reason in refused_variants(cfg).items():
        print(f"{variant} of arm '{arm}': {reason}; its candidates stay PyTorch-only")
    preflight(cfg, workdir)  # no MLflow run exists until data, model, store and disk are fine
    ctx, specs = open_sweep(
        cfg.model_dump(mode="json"), workdir, config_path, flow_run.id, flow_run.name
    )
    teacher_spec = specs[0]
    candidates = [s for s in specs[1:] if not s.quantized]
    variants = [s for s in specs[1:] if s.quantized]
    try:
        data = prepare_data(ctx)
        base = prepare_base(ctx, data)
        teacher = get_teacher(ctx, data, base, teacher_spec)
        teacher_eval = evaluate(ctx, data, teacher)

        runs = []
        # keyed with the seed (experiment.seeds: each seed's replicate of an arm is a chain)
        previous = {}  # (arm index, seed) -> that arm's last stage (the next one continues it)
        last_final = {}  # (arm label, seed) -> its last candidate's final model (arms.from_arm)
        for spec in candidates:
            arm = cfg.pruning.arms[spec.arm_index]
            start = previous.get((spec.arm_index, spec.seed)) or last_final.get(
                (arm.start_arm, spec.seed)
            )
            stage = prune_stage.submit(ctx, spec, data, teacher, start)
            previous[spec.arm_index, spec.seed] = stage
            export = materialize.submit(ctx, spec, stage)
            final = finetune.submit(ctx, spec, data, teacher, export)
            last_final[arm.label, spec.seed] = final
            runs.append(
                Candidate(
                    spec, stage, export, final, evaluate.submit(ctx, data, final, teacher_eval)
                )
            )
        finals = {teacher_spec.label: teacher, **{c.spec.label: c.final for c in runs}}
        # (a replicate has no variants: candidate_specs makes them of the primaries only)
        prepared = [(s, quantize.submit(ctx, s, finals[s.source_label], data)) for s in variants]
        for spec, q in prepared:
            if q.result().meta.get("not_expressible"):  # logged; stays a PyTorch candidate
                skip_variant(ctx, spec, q.result().meta["not_expressible"])
                continue
            runs.append(Candidate(spec, None, None, q, evaluate.submit(ctx, data, q, teacher_eval)))
        wait([c.evaluation for c in runs])
        runs = [Candidate(c.spec, *(f if f is None else f.result() for f in c[1:])) for c in runs]
        replicates = [c for c in runs if c.spec.is_replicate]  # quality only: not timed/served
        runs = [c for c in runs if not c.spec.is_replicate]
        compare_with_sft(ctx, {c.spec.label: (c.spec, c.evaluation) for c in runs})
        over_seeds = aggregate_seeds(
            ctx, teacher_eval, {c.spec.label: (c.spec, c.evaluation) for c in runs + replicates}
        )

        bench = benchmark(
            ctx,
            data,
            [teacher] + [c.final for c in runs],
            [teacher_spec.label] + [c.spec.label for c in runs],
            quality_eligible(
                ctx,
                teacher_eval,
                {c.spec.label: c.evaluation for c in runs},
                {c.spec.label: over_seeds.get(c.spec.source_label, {}) for c in runs},
            ),
        )
        serving = serving_config(cfg)
        logged = [
            log_candidate.submit(
                ctx, teacher_spec, teacher, teacher_eval, bench, {"train": teacher}, serving
            )
        ]
        logged += [
            log_candidate.submit(ctx, c.spec, c.final, c.evaluation, bench, c.trained(), serving)
            for c in runs
        ]
        logged += [
            log_replicate.submit(ctx, c.spec, c.final, c.evaluation, c.trained())
            for c in replicates
        ]
        for f in logged:
            f.result()

        champion = select_champion(ctx)
        version = register(ctx, champion, base.meta["fingerprint"])
        selected = {
            teacher_spec.label: (teacher, teacher_eval),
            **{c.spec.label: (c.final, c.evaluation) for c in runs},
        }[champion["label"]]
        promotion = promote_challenger(ctx, data, champion, version, *selected)
        links = publish_report(ctx, bench, base.meta["fingerprint"])
        close_sweep(ctx, specs, ok=True)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, TerminationSignal)):
            # Ctrl-C / SIGTERM (Prefect turns SIGTERM into TerminationSignal here): training in
            # the worker threads checkpoints at its next step and stops, no new step starts.
            request_stop(type(exc).__name__)
        close_sweep(ctx, specs, ok=False)
        raise
    steps = [data, base, teacher, teacher_eval, bench]
    steps += [s for c in runs + replicates for s in c.steps()]
    return {
        "sweep_run_id": ctx.sweep_run_id,
        "experiment_id": ctx.experiment_id,
        "tracking_uri": ctx.tracking_uri,
        "champion": champion["label"],
        "champion_run_id": champion["run_id"],
        "reason": champion["reason"],
        "registered_version": version,
        "promotion": promotion,
        "links": links,
        "candidates": [s.label for s in specs],
        "computed": sorted({f"{s.kind}-{s.key}" for s in steps if not s.cached}),
        "reused": sorted({f"{s.kind}-{s.key}" for s in steps if s.cached}),
    }


def run_configured(
    config_path: str, overrides: list[str], workdir: str, cfg: NashConfig | None = None
) -> dict:
    """:func:`sweep_flow` on the task runner the config names (:func:`make_task_runner`).

    ``nash run``, ``nash watch`` and scheduled runs all start the sweep through here: the flow
    as decorated would run its tasks on the default thread pool whatever the config says.
    ``cfg``: the already loaded config (else it is loaded from the path and overrides).
    """
    cfg = cfg or load_config(config_path, overrides)
    with api_for_workers(cfg):
        return sweep_flow.with_options(task_runner=make_task_runner(cfg))(
            config_path, overrides, workdir, cfg
        )


@flow(name="nash-scheduled-sweep")
def scheduled_sweep(config_path: str, overrides: list[str], workdir: str) -> dict:
    """What ``nash deploy`` and prefect.yaml schedule: a deployment loads its entrypoint as
    decorated, so this wrapper starts :func:`sweep_flow` as a subflow on the configured runner."""
    return run_configured(config_path, overrides, workdir)
