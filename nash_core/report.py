"""Sweep report pictures and tables: trade-off table, Pareto plot, per-layer mask heatmap.

Pure pandas + matplotlib (Agg backend, no display needed); the flow logs the files to MLflow.
:func:`write_decision` is the one place a candidate table becomes a decision and its files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from nash_core.config import SelectionConfig, Variant  # noqa: E402
from nash_core.io import atomic_write_text  # noqa: E402
from nash_core.selection import (  # noqa: E402
    Decision,
    choose_champion,
    latency_column,
    pareto_frontier,
)

#: Columns of the trade-off table, in order; missing ones are left out.
TABLE_COLUMNS = [
    "label",
    "method",
    "decoder_layers",
    "target_sparsity",
    "stage",
    "encoder_sparsity",
    "params_total",
    "rougeL",
    "rouge1",
    "rouge2",
    "rougeLsum",
    "rougeL_retention",
    "rougeL_delta_ci_low",
    "rougeL_delta_ci_high",
    "latency_p50_ms",
    "latency_p50_ms_low",
    "latency_p50_ms_high",
    "latency_p90_ms",
    "speedup",
    "speedup_low",
    "speedup_high",
    "tokens_per_s",
    "peak_mem_mb",
    "cost_per_1k_requests",
    "pareto",
    "champion",
    "tied",
]


def tradeoff_table(
    df: pd.DataFrame,
    latency: str,
    frontier: pd.Series,
    champion: str,
    tied: list[str] | None = None,
) -> pd.DataFrame:
    """One row per candidate, fastest first, with ``pareto`` and ``champion`` flags, and with
    ``tied`` (the candidates the decision found tied on speed with the champion) a ``tied``
    flag; the ranking latency's interval columns (``<latency>_low`` / ``_high``) follow it."""
    out = df.copy()
    out["pareto"] = frontier.reindex(out.index).fillna(False).astype(bool)
    out["champion"] = out["label"] == champion
    if tied:
        out["tied"] = out["label"].isin(tied)
    cols = [c for c in TABLE_COLUMNS if c in out.columns]
    if latency not in cols:  # the ranking latency goes first among the speed columns
        speed = next(c for c in ("latency_p50_ms", "speedup", "pareto") if c in cols)
        at = cols.index(speed)
        cols[at:at] = [latency, *(c for c in (f"{latency}_low", f"{latency}_high") if c in out)]
    return out.sort_values(latency, na_position="last")[cols].reset_index(drop=True)


def _cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.4g}"
    return str(v)


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub-flavoured markdown (no tabulate dependency)."""
    head = "| " + " | ".join(table.columns) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join([head, sep, *rows]) + "\n"


def write_tradeoff(table: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``tradeoff.csv`` and ``tradeoff.md`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    csv = atomic_write_text(out_dir / "tradeoff.csv", table.to_csv(index=False))
    md = atomic_write_text(out_dir / "tradeoff.md", to_markdown(table))
    return csv, md


def _save(fig, path: str | Path, **savefig) -> Path:
    """Write the figure atomically (a reader never sees half a PNG) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, **savefig)
    plt.close(fig)
    tmp.replace(path)
    return path


# where a point's label may go, in points from the point: right-above first, then around it
_LABEL_SPOTS = (
    (5, 4, "left", "bottom"),
    (5, -4, "left", "top"),
    (-5, 4, "right", "bottom"),
    (-5, -4, "right", "top"),
    (0, 9, "center", "bottom"),
    (0, -9, "center", "top"),
    (5, 16, "left", "bottom"),
    (5, -16, "left", "top"),
)


def _inside(box, frame) -> bool:
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1


def _place_labels(fig, ax, data: pd.DataFrame) -> None:
    """Label every point, moving a label around its point until it stays inside the axes and
    overlaps no earlier label or other point (close candidates such as two k=2 students
    otherwise print on top of each other); when no spot is free, the first spot inside the
    axes is kept (else the first spot)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(data[["_t", "_q"]].to_numpy(dtype=float))
    frame = ax.get_window_extent(renderer)
    taken = []
    for i, (_, row) in enumerate(data.iterrows()):
        others = [pt for j, pt in enumerate(points) if j != i]
        tried = []  # (text, box, inside), in the order of _LABEL_SPOTS
        for dx, dy, ha, va in _LABEL_SPOTS:
            text = ax.annotate(
                str(row["label"]),
                (row["_t"], row["_q"]),
                textcoords="offset points",
                xytext=(dx, dy),
                ha=ha,
                va=va,
                fontsize=7,
            )
            box = text.get_window_extent(renderer).expanded(1.05, 1.15)
            tried.append((text, box, _inside(box, frame)))
            free = not any(box.overlaps(b) for b in taken) and not any(
                box.contains(x, y) for x, y in others
            )
            if free and tried[-1][2]:
                keep = tried[-1]
                break
        else:  # no free spot: the first one inside the axes, else the first one
            keep = next((t for t in tried if t[2]), tried[0])
        for text, _, _ in tried:
            if text is not keep[0]:
                text.remove()
        taken.append(keep[1])


#: Serving precisions a candidate can have: the model's own fp32 and every
#: ``benchmark.variants`` name of the config schema, each a method suffix (``magnitude-int8``).
PRECISIONS = ("fp32", *get_args(Variant))
#: Plot marker per precision; a variant the schema gains later gets a diamond until it has one.
PRECISION_MARKERS = {
    "fp32": "o",
    "int8": "s",
    "bf16": "^",
    "fp16": "v",
    "ct2-int8": "X",
    "ct2-fp32": "P",
}


def structure_and_precision(method: str) -> tuple[str, str]:
    """``"nash-int8"`` -> ``("nash", "int8")``; ``"nash-ct2-int8"`` -> ``("nash", "ct2-int8")``;
    ``"sft"`` -> ``("sft", "fp32")``."""
    method = str(method)
    for tail in sorted(PRECISIONS[1:], key=len, reverse=True):  # "ct2-int8" before "int8"
        if method.endswith(f"-{tail}") and len(method) > len(tail) + 1:
            return method[: -len(tail) - 1], tail
    return method, "fp32"


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series(float("nan"), index=df.index)
    return pd.to_numeric(df[name], errors="coerce")


def error_bars(df: pd.DataFrame, quality: str, latency: str) -> dict[str, pd.Series]:
    """Error-bar lengths (below / above the point, 0 where unknown) for the Pareto plot:
    latency from its bootstrap interval over benchmark rounds (``<latency>_low`` / ``_high``),
    quality from the paired-bootstrap interval of the difference to the teacher
    (``rougeL_delta_ci_low`` / ``_high``) placed on the candidate's score; the teacher, the
    reference of that difference, gets no quality bar."""
    q, t = _col(df, quality), _col(df, latency)
    delta = _col(df, f"{quality}_delta")
    q_lo = q + _col(df, f"{quality}_delta_ci_low") - delta
    q_hi = q + _col(df, f"{quality}_delta_ci_high") - delta
    if "method" in df.columns:
        teacher = df["method"] == "teacher"
        q_lo, q_hi = q_lo.mask(teacher), q_hi.mask(teacher)

    def length(a, b):
        return (a - b).clip(lower=0).fillna(0.0)

    return {
        "_t_minus": length(t, _col(df, f"{latency}_low")),
        "_t_plus": length(_col(df, f"{latency}_high"), t),
        "_q_minus": length(q, q_lo),
        "_q_plus": length(q_hi, q),
    }


def pareto_plot(
    df: pd.DataFrame,
    quality: str,
    latency: str,
    frontier: pd.Series,
    champion: str,
    path: str | Path,
    title: str = "",
) -> Path:
    """Quality vs latency, every candidate labelled, the frontier drawn, the champion starred,
    error bars on both axes where the table has the intervals (:func:`error_bars`).

    Colour is the structure (the arm's method), the marker the serving precision (fp32 circle,
    int8 square, bf16/fp16 triangles), so a sweep with ``benchmark.variants`` reads as
    structure x precision; the legend sits outside the axes and covers no point."""
    data = df.assign(
        _q=pd.to_numeric(df[quality], errors="coerce"),
        _t=pd.to_numeric(df[latency], errors="coerce"),
    ).dropna(subset=["_q", "_t"])
    split = [structure_and_precision(m) for m in data["method"]]
    data = data.assign(_s=[s for s, _ in split], _p=[p for _, p in split])
    data = data.assign(**error_bars(data, quality, latency))
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=110)
    colours = {s: f"C{i % 10}" for i, s in enumerate(sorted(data["_s"].unique()))}
    bars = ["_t_minus", "_t_plus", "_q_minus", "_q_plus"]
    for structure, group in data[(data[bars] > 0).any(axis=1)].groupby("_s", sort=True):
        ax.errorbar(
            group["_t"],
            group["_q"],
            xerr=[group["_t_minus"], group["_t_plus"]],
            yerr=[group["_q_minus"], group["_q_plus"]],
            fmt="none",
            ecolor=colours[structure],
            elinewidth=0.9,
            capsize=2,
            alpha=0.6,
            zorder=2.5,
        )
    for (structure, precision), group in data.groupby(["_s", "_p"], sort=True):
        ax.scatter(
            group["_t"],
            group["_q"],
            s=40,
            zorder=3,
            color=colours[structure],
            marker=PRECISION_MARKERS.get(precision, "D"),
        )
    ax.margins(x=0.1, y=0.12)  # room for the labels of the outermost points
    handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=s) for s, c in colours.items()]
    front = data[frontier.reindex(data.index).fillna(False).astype(bool)].sort_values("_t")
    if len(front):
        (line,) = ax.step(
            front["_t"],
            front["_q"],
            where="post",
            color="grey",
            ls="--",
            lw=1,
            label="Pareto frontier",
            zorder=2,
        )
        handles.append(line)
    champ = data[data["label"] == champion]
    if len(champ):
        handles.append(
            ax.scatter(
                champ["_t"],
                champ["_q"],
                marker="*",
                s=320,
                facecolors="none",
                edgecolors="red",
                linewidths=1.5,
                label=f"champion: {champion}",
                zorder=4,
            )
        )
    ax.set_xlabel(f"{latency} (lower is better)")
    ax.set_ylabel(f"{quality} (higher is better)")
    ax.set_title(title or f"{quality} vs {latency}")
    ax.grid(alpha=0.3)
    precisions = [p for p in PRECISIONS if p in set(data["_p"])]
    if precisions != ["fp32"]:  # marker = precision, in grey: only when variants are there
        handles += [
            plt.Line2D(
                [], [], ls="", marker=PRECISION_MARKERS.get(p, "D"), color="dimgrey", label=p
            )
            for p in precisions
        ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()  # the axes' final size first: labels are placed in display space
    _place_labels(fig, ax, data)
    return _save(fig, path, bbox_inches="tight")  # the legends outside the axes included


def mask_heatmap(
    shapes: dict, num_heads: int, d_ff: int, path: str | Path, title: str = ""
) -> Path:
    """What survived pruning in each encoder layer: a head grid and the FFN width kept.

    ``shapes`` is ``config.json["nash"]["shapes"]`` of a pruned export: per encoder layer the
    kept head indices of ``self`` (``None``: the attention sub-layer was dropped) and the kept
    FFN unit count ``ffn`` (``None``: dropped). ``num_heads`` / ``d_ff`` are the unpruned sizes.
    A CoFi export whose hidden dimension was pruned (``shapes["hidden"]``) says so in the title.
    """
    import numpy as np

    layers = shapes["encoder"]
    heads = np.zeros((len(layers), num_heads))
    ffn = np.zeros((len(layers), 1))
    for i, spec in enumerate(layers):
        for h in spec.get("self") or []:
            heads[i, h] = 1.0
        ffn[i, 0] = (spec.get("ffn") or 0) / d_ff
    size = (2.0 + 0.5 * num_heads, 1.2 + 0.45 * len(layers))
    fig, (ax_h, ax_f) = plt.subplots(
        1, 2, figsize=size, dpi=110, gridspec_kw={"width_ratios": [num_heads, 1.6]}
    )
    ax_h.imshow(heads, cmap="Greens", vmin=0, vmax=1, aspect="auto")
    ax_h.set_xticks(range(num_heads))
    ax_h.set_yticks(range(len(layers)))
    ax_h.set_xlabel("head")
    ax_h.set_ylabel("encoder layer")
    ax_h.set_title(f"heads kept {int(heads.sum())}/{heads.size}", fontsize=8)
    ax_f.imshow(ffn, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, spec in enumerate(layers):
        ax_f.text(0, i, f"{spec.get('ffn') or 0}/{d_ff}", ha="center", va="center", fontsize=7)
    ax_f.set_xticks([])
    ax_f.set_yticks(range(len(layers)))
    ax_f.set_title("FFN units kept", fontsize=8)
    heading = title or "encoder units kept"
    hidden = shapes.get("hidden")
    if hidden:
        heading += f" | hidden {hidden['kept']}/{hidden['full']}"
    fig.suptitle(heading, fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------- the decision
QUALITY = "rougeL"


@dataclass(frozen=True)
class DecisionFiles:
    """What :func:`write_decision` chose and wrote."""

    decision: Decision
    tradeoff: pd.DataFrame  # the trade-off table (fastest first, pareto / champion flags)
    files: list[Path]  # tradeoff.csv, tradeoff.md, pareto.png, decision.txt


def write_decision(
    table: pd.DataFrame, selection: SelectionConfig, out_dir: str | Path, title: str
) -> DecisionFiles:
    """Apply the selection policy to a candidate table and write the decision artifacts into
    ``out_dir``: the trade-off table (CSV + Markdown), the Pareto plot and ``decision.txt``.

    The sweep's own champion (tasks/champion.py), a re-benchmark's hardware report and
    ``nash select --hardware`` all decide and write through here; the caller logs the files.
    """
    out_dir = Path(out_dir)
    latency = latency_column(selection)
    decision = choose_champion(table, selection)
    frontier = pareto_frontier(table, QUALITY, latency)
    trade = tradeoff_table(table, latency, frontier, decision.label, decision.tied)
    csv, md = write_tradeoff(trade, out_dir)
    plot = pareto_plot(
        table,
        QUALITY,
        latency,
        frontier,
        decision.label,
        out_dir / "pareto.png",
        title=f"{title}: {QUALITY} vs {latency}",
    )
    text = atomic_write_text(out_dir / "decision.txt", decision.as_text())
    return DecisionFiles(decision, trade, [csv, md, plot, text])
