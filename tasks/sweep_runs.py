"""Prefect tasks that open and close a sweep's MLflow runs and link them with the Prefect run.

All runs are created up front (parent + one child per candidate, teacher included): the UI
shows the whole sweep at once, and training tasks can log their curves live to a known run id.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from nash_core.config import NashConfig
from nash_core.io import atomic_write_text
from nash_core.runtimes import refused_variants
from nash_mlflow import liveness, tracking
from tasks.context import TEACHER_LABEL, CandidateSpec, SweepContext, arm_candidates
from tasks.retry import transient_retries

#: The ``quantization`` param of a candidate run, by precision variant.
QUANTIZATION = {"int8": "int8-dynamic", "bf16": "bf16", "fp16": "fp16"}
#: (another runtime's variant, ct2-int8..., is logged under its own name)


def sweep_dir(ctx: SweepContext) -> Path:
    """Per-sweep files (resolved config, report) under the workdir, named by the parent run."""
    return Path(ctx.workdir).resolve() / "sweeps" / ctx.sweep_run_id


def candidate_specs(cfg: NashConfig) -> list[CandidateSpec]:
    """The teacher, every arm's candidates in stage order, their replicates under
    ``experiment.seeds``' other seeds, then for each of
    ``benchmark.variants`` (int8 with ``quantize_int8``) a variant of each of them, the
    teacher's included (what the precision alone buys)."""
    teacher = CandidateSpec(label=TEACHER_LABEL, method="teacher")
    specs = [teacher] + [
        c for i, arm in enumerate(cfg.pruning.arms) for c in arm_candidates(arm, i)
    ]
    trained = list(specs)
    specs += [  # experiment.seeds: every arm again under each other seed, for quality only
        c
        for seed in cfg.experiment.replicate_seeds
        for i, arm in enumerate(cfg.pruning.arms)
        for c in arm_candidates(arm, i, seed)
    ]
    refused = refused_variants(cfg)  # said once before training (sweep_flow)
    for variant in cfg.benchmark.all_variants:
        specs += [
            s.variant_of(variant)
            for s in trained
            if s.arm_index is None or (cfg.pruning.arms[s.arm_index].label, variant) not in refused
        ]
    return specs


@task(name="open-sweep", cache_policy=NO_CACHE, **transient_retries())
def open_sweep(
    config: dict, workdir: str, config_path: str, flow_run_id: str | None, flow_run_name: str | None
) -> tuple[SweepContext, list[CandidateSpec]]:
    """Create the parent run (config, provenance) and one child run per candidate."""
    cfg = NashConfig.model_validate(config)
    uri = tracking.resolve_tracking_uri(cfg, workdir)
    client = tracking.make_client(uri)
    exp_id = tracking.ensure_experiment(client, cfg.experiment_name(), uri)
    name = f"{cfg.experiment.name}-{flow_run_name}" if flow_run_name else cfg.experiment.name
    parent = tracking.create_run(
        client,
        exp_id,
        name,
        {
            tracking.KIND: "sweep",
            "nash.config_name": cfg.experiment.name,
            "nash.config_path": config_path,
            "nash.git_commit": tracking.git_commit(),
            "prefect.flow_run_id": flow_run_id,
            "prefect.flow_run_name": flow_run_name,
            "mlflow.note.content": f"NASH sweep of config '{cfg.experiment.name}' "
            f"(Prefect flow run {flow_run_name or '-'}); its report (decision, "
            "candidate table, Pareto plot) replaces this text once the sweep "
            "completes",
            **liveness.identity(workdir),
        },
        params=tracking.flatten(cfg.model_dump(mode="json")),
    )
    ctx = SweepContext(
        workdir=str(Path(workdir).resolve()),
        config=cfg.model_dump(mode="json"),
        tracking_uri=uri,
        experiment_id=exp_id,
        sweep_run_id=parent,
        flow_run_id=flow_run_id,
        flow_run_name=flow_run_name,
    )
    liveness.hold(sweep_dir(ctx), parent)  # until close_sweep, or until this process dies
    abandoned = liveness.fail_abandoned(client, workdir, parent)
    if abandoned:
        get_run_logger().warning(
            "marked the runs of dead sweep(s) %s FAILED; this sweep reuses their finished steps",
            ", ".join(abandoned),
        )
    resolved = atomic_write_text(
        sweep_dir(ctx) / "config.yaml", yaml.safe_dump(ctx.config, sort_keys=False)
    )
    client.log_artifact(parent, str(resolved))

    specs = []
    for spec in candidate_specs(cfg):
        run_id = tracking.create_run(
            client,
            exp_id,
            spec.label,
            {
                # a replicate is not a candidate: no table, selection or registry sees it
                tracking.KIND: "replicate" if spec.is_replicate else "candidate",
                tracking.METHOD: spec.method,
                tracking.LABEL: spec.label,
                "nash.config_name": cfg.experiment.name,
                "prefect.flow_run_id": flow_run_id,
                "prefect.flow_run_name": flow_run_name,
            },
            params={
                "stage": spec.stage,
                "target_sparsity": spec.target or 0.0,
                "arm": spec.arm_label,
                **({"seed": spec.seed} if spec.is_replicate else {}),
                "quantization": QUANTIZATION.get(spec.precision, spec.precision or "none"),
            },
            parent_run_id=parent,
        )
        specs.append(spec.model_copy(update={"run_id": run_id}))

    url = tracking.run_url(uri, exp_id, parent)
    get_run_logger().info("MLflow sweep run %s: %s (store %s)", parent, url, uri)
    create_markdown_artifact(
        key="mlflow-sweep-run",
        description="Where this sweep's results are tracked",
        markdown=(
            f"## MLflow\n\n- sweep run: [{parent}]({url})\n- experiment: "
            f"`{cfg.experiment_name()}` (id {exp_id})\n- tracking URI: `{uri}`\n"
            f"- candidates: {', '.join(s.label for s in specs)}\n\n"
            + (
                ""
                if uri.startswith("http")
                else f"Open it with `nash ui --workdir {ctx.workdir}`.\n"
            )
        ),
    )
    return ctx, specs


@task(name="close-sweep", cache_policy=NO_CACHE, **transient_retries())
def close_sweep(ctx: SweepContext, specs: list[CandidateSpec], ok: bool) -> None:
    """Mark still-running runs finished (or failed, when the flow failed)."""
    client = tracking.make_client(ctx.tracking_uri)
    for run_id in [s.run_id for s in specs] + [ctx.sweep_run_id]:
        info = client.get_run(run_id).info
        if info.status == "RUNNING" and info.lifecycle_stage != "deleted":
            tracking.finish_run(client, run_id, ok)
    liveness.release(ctx.sweep_run_id)


@task(name="skip-variant", cache_policy=NO_CACHE, **transient_retries())
def skip_variant(ctx: SweepContext, spec: CandidateSpec, reason: str) -> None:
    """A serving variant its runtime cannot express (``not expressible in CTranslate2: ...``):
    said in one log line, recorded on the sweep run as ``nash.not_expressible.<label>``, and
    its empty candidate run deleted, so that no table or selection sees a candidate without
    measurements. Its source model stays a candidate in PyTorch."""
    get_run_logger().warning("%s: %s; it stays a PyTorch candidate", spec.label, reason)
    client = tracking.make_client(ctx.tracking_uri)
    tracking.set_tags(client, ctx.sweep_run_id, {f"nash.not_expressible.{spec.label}": reason})
    if spec.run_id:
        client.delete_run(spec.run_id)
