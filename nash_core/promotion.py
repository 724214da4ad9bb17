"""Rolling a model out in steps: hardware-qualified figures, the promotion gate, alias history.

Pure pandas (no MLflow, no Prefect): ``nash_mlflow/registry.py`` reads runs and
registered-model tags and hands them here.

- **Hardware names** qualify a re-benchmark's metrics (``hw/<name>/latency_p50_ms_bs1``) and name
  the alias of a per-hardware champion (``champion-<name>``); :func:`default_hardware_name`
  derives one from a hardware fingerprint.
- **The promotion gate** (:func:`promotion_gate`): the challenger replaces the champion only if,
  on the same test examples with the same decoding, it is not worse than the champion by more
  than the selection policy tolerates and its speedup interval over the champion (an interleaved
  benchmark of the two, paired by round) lies above ``1 / (1 + max_slowdown)``: the selection
  rule itself (:func:`choose_champion`) with the champion in the teacher's place.
- **Alias moves** are recorded as registered-model tags ``nash.move.<000001>`` (JSON: alias,
  from, to, who, when, why, kind); :func:`rollback_target` reads that history.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field

import pandas as pd

from nash_core.config import SelectionConfig
from nash_core.metrics import SPEED_METRICS
from nash_core.selection import (
    TEACHER,
    choose_champion,
    latency_column,
    quality_reasons,
    speed_interval,
    speed_reason,
    speedup_columns,
)

HW_PREFIX = "hw"
MOVE_TAG = "nash.move."


# --------------------------------------------------------------------------- hardware names
def hw_metric(hardware: str, metric: str) -> str:
    """The key of ``metric`` measured on ``hardware``: ``hw/<hardware>/<metric>``."""
    return f"{HW_PREFIX}/{hardware}/{metric}"


def champion_alias(hardware: str, alias: str = "champion") -> str:
    return f"{alias}-{hardware}"


def default_hardware_name(fingerprint: dict) -> str:
    """A name for the machine a fingerprint describes: the GPU, else the CPU model and the
    torch thread count (latency on a CPU depends on both), lower case, ``[a-z0-9-]`` only."""
    if fingerprint.get("gpu_name"):
        raw = str(fingerprint["gpu_name"])
    else:
        raw = f"{fingerprint.get('cpu_model') or 'cpu'} {fingerprint.get('torch_threads') or 1}t"
    raw = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*?(?=\s\d+t$|$)", " ", raw.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", raw).strip("-")
    return slug[:48].strip("-") or "hardware"


def hardware_table(df: pd.DataFrame, hardware: str) -> pd.DataFrame:
    """The candidate table as measured on ``hardware``: its ``hw/<hardware>/<metric>`` columns
    replace the sweep's own speed columns (quality columns are the sweep's); speed columns the
    hardware has no figure for are dropped, never silently kept from the original machine."""
    prefix = hw_metric(hardware, "")
    hw_cols = {c: c[len(prefix) :] for c in df.columns if c.startswith(prefix)}
    speed = [
        c
        for c in df.columns
        if not c.startswith(f"{HW_PREFIX}/")
        and any(
            c == m or c.startswith(f"{m}_bs") or c.startswith(f"fixed_{m}") for m in SPEED_METRICS
        )
    ]
    out = df.drop(columns=speed + [c for c in df.columns if c.startswith(f"{HW_PREFIX}/")])
    return pd.concat([out, df[list(hw_cols)].rename(columns=hw_cols)], axis=1)


def hardware_names(columns) -> list[str]:
    """Hardware names that have metrics among ``columns`` (``hw/<name>/...``)."""
    names = {
        c.split("/")[1] for c in columns if c.startswith(f"{HW_PREFIX}/") and c.count("/") >= 2
    }
    return sorted(names)


# --------------------------------------------------------------------------- promotion gate
@dataclass
class GateResult:
    """The gate's numbers and verdict; ``reason`` says why in one line."""

    passed: bool
    reason: str
    champion: str
    challenger: str
    numbers: dict = field(default_factory=dict)

    def as_text(self) -> str:
        lines = [
            f"promotion gate: {'PASSED' if self.passed else 'FAILED'}",
            f"champion: {self.champion}",
            f"challenger: {self.challenger}",
            f"reason: {self.reason}",
        ]
        lines += [f"{k}: {_fmt(v)}" for k, v in self.numbers.items()]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "missing" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def promotion_gate(
    champion: dict, challenger: dict, sel: SelectionConfig, max_slowdown: float
) -> GateResult:
    """Decide whether ``challenger`` may replace ``champion``: the selection rule
    (:func:`choose_champion`) with the champion in the teacher's place.

    Each side is ``{"label", "rougeL", "latency_ms"}`` measured in the same session (same test
    examples and decoding; latencies interleaved in one benchmark); ``challenger`` also carries
    ``rougeL_delta_ci_low`` / ``rougeL_delta_ci_high`` (the paired-bootstrap interval of
    challenger - champion ROUGE-L over the examples) and ``speedup`` / ``speedup_low`` /
    ``speedup_high`` (champion time / challenger time, paired by round, with its interval).
    Quality: non-inferior as the policy defines it (a champion that scores ROUGE-L 0 has no
    quality to lose). Speed: the speedup interval must lie above ``1 / (1 + max_slowdown)``:
    with ``max_slowdown`` 0 the challenger must be faster beyond the noise, exactly the sweep's
    rule; 0.05 lets it through unless it is slower than the champion by more than 5% beyond
    doubt. No interval (fewer than 2 rounds): the gate fails, saying so.
    """
    lat = latency_column(sel)
    point, low, high = speedup_columns(sel)
    c_q, n_q = float(champion["rougeL"]), float(challenger["rougeL"])
    c_t, n_t = float(champion["latency_ms"]), float(challenger["latency_ms"])
    retention = n_q / c_q if c_q > 0 else (1.0 if n_q >= c_q else 0.0)
    speed = {k: challenger.get(k, math.nan) for k in ("speedup", "speedup_low", "speedup_high")}
    speed = {k: math.nan if v is None else float(v) for k, v in speed.items()}
    base = {"run_id": None, "teacher_rougeL": c_q, "rougeL_delta_ci_high": 0.0}
    table = pd.DataFrame(
        [
            {
                **base,
                "label": champion["label"],
                "method": TEACHER,
                "rougeL": c_q,
                "rougeL_retention": 1.0,
                "rougeL_delta_ci_low": 0.0,
                lat: c_t,
                point: 1.0,
                low: 1.0,
                high: 1.0,
            },
            {
                **base,
                "label": challenger["label"],
                "method": "challenger",
                "rougeL": n_q,
                "rougeL_retention": retention,
                "rougeL_delta_ci_low": float(challenger["rougeL_delta_ci_low"]),
                "rougeL_delta_ci_high": float(challenger["rougeL_delta_ci_high"]),
                lat: n_t,
                point: speed["speedup"],
                low: speed["speedup_low"],
                high: speed["speedup_high"],
            },
        ]
    )
    threshold = 1.0 / (1.0 + max_slowdown)
    decision = choose_champion(table, sel, speed_threshold=threshold, check_quality=c_q > 0)
    numbers = {
        "champion_rougeL": c_q,
        "challenger_rougeL": n_q,
        "rougeL_retention": retention,
        "rougeL_delta_ci_low": float(challenger["rougeL_delta_ci_low"]),
        "rougeL_delta_ci_high": float(challenger["rougeL_delta_ci_high"]),
        f"champion_{lat}": c_t,
        f"challenger_{lat}": n_t,
        "slowdown": n_t / c_t - 1.0 if c_t > 0 else math.inf,
        "speedup": speed["speedup"],
        "speedup_low": speed["speedup_low"],
        "speedup_high": speed["speedup_high"],
        "speed_threshold": threshold,
        "max_slowdown": max_slowdown,
    }
    if decision.is_teacher:
        row = table.iloc[1]
        quality = quality_reasons(row, c_q, sel) if c_q > 0 else []
        slow = speed_reason(speed_interval(row, sel), sel, threshold)
        why = [f"quality: {'; '.join(quality)}"] if quality else []
        why += [f"speed: {slow}"] if slow else []
        return GateResult(
            False,
            f"{'; '.join(why) or decision.reason} (the selection rule, with the champion as "
            "the baseline)",
            champion["label"],
            challenger["label"],
            numbers,
        )
    reason = (
        f"not worse than the champion beyond the policy's tolerance (ROUGE-L {n_q:.4g} vs "
        f"{c_q:.4g}, 95% CI of the difference [{numbers['rougeL_delta_ci_low']:.4g}, "
        f"{numbers['rougeL_delta_ci_high']:.4g}]) and not slower beyond the noise (speedup over "
        f"the champion {speed['speedup']:.3f} [{speed['speedup_low']:.3f}, "
        f"{speed['speedup_high']:.3f}] lies above {threshold:.3f} = 1 / (1 + max_slowdown "
        f"{max_slowdown:g}); {lat} {n_t:.4g} vs {c_t:.4g} ms)"
    )
    return GateResult(True, reason, champion["label"], challenger["label"], numbers)


# --------------------------------------------------------------------------- alias history
def move_key(index: int) -> str:
    return f"{MOVE_TAG}{index:06d}"


def parse_moves(tags: dict[str, str]) -> list[dict]:
    """The recorded alias moves, oldest first (unreadable entries are skipped)."""
    moves = []
    for key in sorted(k for k in tags if k.startswith(MOVE_TAG)):
        try:
            moves.append(json.loads(tags[key]))
        except (TypeError, ValueError):
            continue
    return moves


def next_move_key(tags: dict[str, str]) -> str:
    used = [
        int(k[len(MOVE_TAG) :])
        for k in tags
        if k.startswith(MOVE_TAG) and k[len(MOVE_TAG) :].isdigit()
    ]
    return move_key(max(used, default=0) + 1)


def champion_lineage(moves: list[dict], alias: str) -> list[str]:
    """The versions ``alias`` pointed at, oldest first, with rolled-back ones taken off:
    a promotion pushes its version, a rollback pops the current one."""
    stack: list[str] = []
    for m in moves:
        if m.get("alias") != alias:
            continue
        if m.get("kind") == "rollback":
            if stack:
                stack.pop()
            if m.get("to") and (not stack or stack[-1] != m["to"]):
                stack.append(m["to"])
        elif m.get("to"):
            if not stack or stack[-1] != m["to"]:
                stack.append(m["to"])
        else:
            stack = []
    return stack


def rollback_target(moves: list[dict], alias: str, current: str | None) -> str | None:
    """The version ``alias`` pointed at before ``current``, or None when there is no earlier one."""
    lineage = champion_lineage(moves, alias)
    if current is None or not lineage or lineage[-1] != current:
        # the alias was moved outside nash (no record): only recorded champions count
        lineage = [v for v in lineage if v != current] + ([current] if current else [])
    return lineage[-2] if len(lineage) >= 2 else None
