"""Prefect task at the end of a sweep: the selected model becomes the challenger, and the
champion only through the promotion gate.

- No champion yet (the first sweep): the selected model becomes the champion.
- The selected model already is the champion: nothing moves.
- Otherwise it becomes the ``challenger``, and the gate (nash_core.promotion.promotion_gate)
  compares it with the current champion: the champion is fetched from the registry and
  evaluated again on this sweep's test examples with this sweep's decoding, the two are
  compared by paired bootstrap and timed interleaved on the sweep's benchmark inputs.
  ``registry.promotion: auto`` moves ``champion`` when the gate passes; ``manual`` leaves it
  to ``nash promote``. The gate's numbers (metrics ``gate/...``), decision and reason (tags
  ``nash.gate.*``, artifacts ``gate/gate.txt``, ``gate/gate.json``) go on the sweep run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from nash_core.errors import NashError
from nash_core.io import atomic_write_json, atomic_write_text
from nash_core.promotion import GateResult, promotion_gate
from nash_mlflow import tracking
from nash_mlflow.registry import alias_version, fetch_model, move_alias
from tasks.cache import StepResult
from tasks.context import GPU_TAG, SweepContext


@task(name="promotion-gate", cache_policy=NO_CACHE, tags=[GPU_TAG])
def promote_challenger(
    ctx: SweepContext,
    data: StepResult,
    champion: dict,
    version: str | None,
    model: StepResult,
    evaluation: StepResult,
) -> dict:
    """Register the sweep's selection as challenger / champion (see the module docstring).

    ``champion`` is select_champion's result, ``version`` its registered version, ``model`` and
    ``evaluation`` the selected candidate's model and evaluation steps. Returns
    ``{"decision", "reason", "champion_version", "challenger_version", "gate"}``.
    """
    cfg = ctx.cfg
    reg = cfg.registry
    if version is None:
        return {
            "decision": "not registered",
            "reason": "registry.enabled is false",
            "champion_version": None,
            "challenger_version": None,
            "gate": None,
        }
    client = tracking.make_client(ctx.tracking_uri)
    name = cfg.registered_model_name()
    current = alias_version(client, name, reg.alias)
    origin = f"sweep {ctx.sweep_run_id} selected {champion['label']}"
    gate = None
    if current is None and reg.promotion == "auto":
        move_alias(
            client,
            name,
            reg.alias,
            version,
            kind="sweep",
            why=f"{origin}; no {reg.alias} yet: nothing to compare with",
        )
        decision, reason = "promoted", f"no {reg.alias} yet: version {version} becomes it"
    elif current == version:
        decision, reason = (
            "unchanged",
            (f"the selection is the current {reg.alias} (version {version}): nothing to promote"),
        )
    else:
        move_alias(client, name, reg.challenger_alias, version, kind="sweep", why=origin)
        if current is None:
            decision, reason = (
                "awaiting promotion",
                (f"no {reg.alias} yet and registry.promotion is manual: `nash promote {version}`"),
            )
        else:
            gate = _run_gate(ctx, client, name, current, champion, data, model, evaluation)
            if gate.passed and reg.promotion == "auto":
                move_alias(
                    client,
                    name,
                    reg.alias,
                    version,
                    kind="gate",
                    why=f"{origin}; promotion gate passed: {gate.reason}",
                )
                move_alias(
                    client,
                    name,
                    reg.challenger_alias,
                    None,
                    kind="gate",
                    why=f"promoted to {reg.alias}",
                )
                decision = "promoted"
            elif gate.passed:
                decision = "awaiting promotion"
            else:
                decision = "kept champion"
            reason = f"promotion gate {'passed' if gate.passed else 'failed'}: {gate.reason}" + (
                f"; registry.promotion is manual: `nash promote {version}`"
                if gate.passed and reg.promotion == "manual"
                else ""
            )
    result = {
        "decision": decision,
        "reason": reason,
        "champion_before": current,
        "champion_version": alias_version(client, name, reg.alias),
        "challenger_version": version,
        "gate": gate.to_dict() if gate else None,
    }
    _log(ctx, client, result, gate)
    get_run_logger().info("promotion: %s (%s)", decision, reason)
    return result


def _run_gate(
    ctx: SweepContext,
    client,
    name: str,
    current: str,
    selected: dict,
    data: StepResult,
    model: StepResult,
    evaluation: StepResult,
) -> GateResult:
    """Evaluate the current champion again and time it against the challenger, then decide."""
    from nash_core.benchmark import benchmark_models
    from nash_core.data import read_split
    from nash_core.evaluate import compare_with_teacher, evaluate_model
    from nash_core.io import read_json
    from nash_core.runtime import pick_device

    cfg = ctx.cfg
    out = Path(ctx.workdir) / "sweeps" / ctx.sweep_run_id / "gate"
    mv = client.get_model_version(name, current)
    champ_label = f"{name} v{current}"
    try:
        champ_run = client.get_run(mv.run_id)
        champ_dir = fetch_model(client, champ_run, out / "champion-model")
    except NashError as exc:
        return GateResult(
            False,
            f"the current champion (version {current}) cannot be fetched: {exc}",
            champ_label,
            selected["label"],
        )
    device = pick_device(cfg.experiment.device)
    champ_eval = out / "champion-eval"
    evaluate_model(
        champ_dir,
        data.meta["splits"],
        cfg.evaluation,
        champ_eval,
        device=device,
        source_prefix=cfg.data.source_prefix,
        max_source_length=cfg.data.max_source_length,
        seed=cfg.experiment.seed,
    )
    chall_eval = Path(evaluation.meta["eval_dir"])
    per_example = [
        json.loads(line)
        for line in (chall_eval / "per_example.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    try:
        cmp = compare_with_teacher(
            per_example,
            champ_eval,
            read_json(chall_eval / "metrics.json")["protocol"],
            cfg.evaluation,
            cfg.experiment.seed,
        )
    except NashError as exc:
        return GateResult(
            False,
            f"champion and challenger cannot be compared on the same examples: {exc}",
            champ_label,
            selected["label"],
        )

    sel = cfg.selection
    rows = read_split(data.meta["splits"], "test", limit=cfg.benchmark.num_inputs)
    bench_cfg = cfg.benchmark.model_copy(
        update={"batch_sizes": [sel.batch_size], "fixed_new_tokens": None}
    )
    bench = benchmark_models(
        [champ_dir, model.meta["model_dir"]],
        bench_cfg,
        cfg.evaluation,
        texts=[cfg.data.source_prefix + r["source"] for r in rows],
        max_source_length=cfg.data.max_source_length,
        device=device,
        names=[champ_label, selected["label"]],
        seed=cfg.experiment.seed,
    )
    atomic_write_json(out / "benchmark.json", bench)
    res = {m["name"]: m["results"]["natural"][str(sel.batch_size)] for m in bench["models"]}
    lat = {name: r["latency"]["median_ms"] for name, r in res.items()}
    speed = res[selected["label"]].get("speedup_interval") or {}  # challenger / champion, paired
    challenger_q = float(np.mean([r["rougeL"] for r in per_example]))
    return promotion_gate(
        {"label": champ_label, "rougeL": cmp["teacher_rougeL"], "latency_ms": lat[champ_label]},
        {
            "label": selected["label"],
            "rougeL": challenger_q,
            "rougeL_delta_ci_low": cmp["rougeL_delta_ci_low"],
            "rougeL_delta_ci_high": cmp["rougeL_delta_ci_high"],
            "latency_ms": lat[selected["label"]],
            "speedup": res[selected["label"]]["speedup"],
            "speedup_low": speed.get("low"),
            "speedup_high": speed.get("high"),
        },
        sel,
        cfg.registry.max_slowdown,
    )


def _log(ctx: SweepContext, client, result: dict, gate: GateResult | None) -> None:
    """The decision on the sweep run: tags, ``gate/*`` metrics, gate.txt / gate.json."""
    reg = ctx.cfg.registry
    tracking.set_tags(
        client,
        ctx.sweep_run_id,
        {
            "nash.promotion.decision": result["decision"],
            "nash.promotion.reason": result["reason"][:5000],
            "nash.promotion.mode": reg.promotion,
            "nash.promotion.challenger_version": result["challenger_version"],
            "nash.promotion.champion_before": result["champion_before"],
            "nash.promotion.champion_after": result["champion_version"],
        },
    )
    out = Path(ctx.workdir) / "sweeps" / ctx.sweep_run_id / "gate"
    files = [atomic_write_json(out / "gate.json", result)]
    if gate is not None:
        tracking.log_metrics(
            client, ctx.sweep_run_id, {f"gate/{k}": v for k, v in gate.numbers.items()}
        )
        tracking.set_tags(client, ctx.sweep_run_id, {"nash.gate.passed": gate.passed})
        files.append(
            atomic_write_text(
                out / "gate.txt", gate.as_text() + f"decision: {result['decision']}\n"
            )
        )
    tracking.log_files(client, ctx.sweep_run_id, files, "gate")
