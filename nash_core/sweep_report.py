"""A sweep's answer in words: the decision, the candidate table and the numbers behind them.

One :class:`SweepReport` (built by ``nash_mlflow/sweep_report.py`` from the MLflow store) renders as
terminal text (``nash report``), as GitHub-flavoured Markdown (the sweep run's description in
the MLflow UI, ``nash report --markdown``) and as a standalone HTML page (``--html``, the Pareto
plot embedded). Pure pandas + stdlib: no MLflow, no Prefect.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

TEACHER = "teacher"


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def _f(digits: int) -> Callable[[object], str]:
    return lambda v: "" if _num(v) is None else f"{_num(v):.{digits}f}"


def _params(v) -> str:
    x = _num(v)
    if x is None:
        return ""
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x / 1e3:.1f}k"


def _speedup(v) -> str:
    return "" if _num(v) is None else f"{_num(v):.2f}x"


def _cost(v) -> str:
    x = _num(v)
    return "" if x is None else f"${x:.4g}"


def _int(v) -> str:
    x = _num(v)
    return "" if x is None else str(int(round(x)))


def _ci(row: pd.Series) -> str:
    lo, hi = _num(row.get("rougeL_delta_ci_low")), _num(row.get("rougeL_delta_ci_high"))
    if lo is None or hi is None or row.get("method") == TEACHER:
        return ""
    return f"[{lo:+.3f}, {hi:+.3f}]"


def _interval(row: pd.Series, column: str, digits: int) -> str:
    lo, hi = _num(row.get(f"{column}_low")), _num(row.get(f"{column}_high"))
    return "" if lo is None or hi is None else f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def _over_seeds(row: pd.Series) -> str:
    """``mean ± sd (n seeds)`` of ROUGE-L over experiment.seeds, empty for one seed."""
    mean, sd, n = (_num(row.get(c)) for c in ("rougeL_seeds", "rougeL_seeds_std", "seeds"))
    if mean is None or row.get("method") == TEACHER:
        return ""
    return f"{mean:.3f} ± {sd or 0:.3f} ({int(n or 0)})"


def _retention_seeds(row: pd.Series) -> str:
    ret, lo, hi = (
        _num(row.get(c))
        for c in (
            "rougeL_retention_seeds",
            "rougeL_retention_seeds_ci_low",
            "rougeL_retention_seeds_ci_high",
        )
    )
    if ret is None or lo is None or hi is None or row.get("method") == TEACHER:
        return ""
    return f"{ret:.3f} [{lo:.3f}, {hi:.3f}]"


#: Cells computed from several columns: key -> (row, batch size) -> text. The interval cells
#: are shown when some row has the interval (sweeps logged before intervals existed have none).
COMPUTED: dict[str, Callable[[pd.Series, int], str]] = {
    "_ci": lambda r, bs: _ci(r),
    "_p50_iv": lambda r, bs: _interval(r, f"latency_p50_ms_bs{bs}", 1),
    "_speed_iv": lambda r, bs: (
        "" if r.get("method") == TEACHER else _interval(r, f"speedup_bs{bs}", 2)
    ),
    "_seeds": lambda r, bs: _over_seeds(r),
    "_seeds_ret": lambda r, bs: _retention_seeds(r),
}
_SHOWN_IF = {
    "_p50_iv": "latency_p50_ms_bs{bs}_low",
    "_speed_iv": "speedup_bs{bs}_low",
    "_seeds": "rougeL_seeds",
    "_seeds_ret": "rougeL_retention_seeds_ci_low",
}

#: (header, column of the trade-off table or a COMPUTED key, formatter). ``{bs}`` is the
#: selection batch size.
COLUMNS: list[tuple[str, str, Callable | None]] = [
    ("method", "method", str),
    ("decoder layers", "decoder_layers", _int),
    ("encoder sparsity", "encoder_sparsity", _f(3)),
    ("params", "params_total", _params),
    ("ROUGE-L", "rougeL", _f(3)),
    ("retention", "rougeL_retention", _f(3)),
    ("95% CI of ROUGE-L delta", "_ci", None),
    ("ROUGE-L over seeds (mean ± sd)", "_seeds", None),
    ("retention over seeds [95% CI]", "_seeds_ret", None),
    ("p50 ms (bs {bs})", "latency_p50_ms", _f(1)),
    ("p50 95% interval", "_p50_iv", None),
    ("p90 ms (bs {bs})", "latency_p90_ms", _f(1)),
    ("speedup", "speedup", _speedup),
    ("speedup 95% interval", "_speed_iv", None),
    ("cost / 1k requests", "cost_per_1k_requests", _cost),
]


@dataclass
class SweepReport:
    """Everything a reader of one sweep needs; ``table`` has one row per candidate (teacher
    included) with the metric names the candidate runs carry, plus ``pareto`` when known."""

    run_id: str
    run_name: str
    experiment: str
    started: str
    status: str
    champion: str
    reason: str
    table: pd.DataFrame
    batch_size: int = 1
    base_fingerprint: str | None = None
    hardware: dict = field(default_factory=dict)
    registered: str | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    tied: list[str] = field(default_factory=list)  # tied on speed with the champion

    def _shown(self, table: pd.DataFrame, key: str) -> bool:
        if key not in COMPUTED:
            return key in table.columns
        need = _SHOWN_IF.get(key, "").format(bs=self.batch_size)
        return not need or (need in table.columns and table[need].notna().any())

    def mark(self, label: str) -> str:
        """How the renderers flag a row: champion, tied with it on speed, or nothing."""
        if label == self.champion:
            return "champion"
        return "tied" if label in self.tied else ""

    # ------------------------------------------------------------------ rows
    def ordered(self) -> pd.DataFrame:
        """The teacher first, then the candidates fastest first (missing latency last)."""
        t = self.table.copy()
        t["_teacher"] = t["method"] != TEACHER
        lat = (
            pd.to_numeric(t.get("latency_p50_ms"), errors="coerce")
            if "latency_p50_ms" in t
            else pd.Series(0.0, index=t.index)
        )
        t["_lat"] = lat
        return (
            t.sort_values(["_teacher", "_lat"], na_position="last", kind="stable")
            .drop(columns=["_teacher", "_lat"])
            .reset_index(drop=True)
        )

    def row(self, label: str) -> pd.Series | None:
        hit = self.table[self.table["label"] == label]
        return None if hit.empty else hit.iloc[0]

    def teacher(self) -> pd.Series | None:
        hit = self.table[self.table["method"] == TEACHER]
        return None if hit.empty else hit.iloc[0]

    def champion_is_teacher(self) -> bool:
        row = self.row(self.champion)
        return row is None or row.get("method") == TEACHER

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """Headers and formatted cells (no champion marking; the renderers add it)."""
        table = self.ordered()
        cols = [c for c in COLUMNS if self._shown(table, c[1])]
        headers = ["candidate"] + [h.format(bs=self.batch_size) for h, _, _ in cols]
        if "pareto" in table.columns:
            headers.append("Pareto")
        rows = []
        for _, r in table.iterrows():
            cells = [str(r["label"])]
            for _, key, fmt in cols:
                cells.append(
                    COMPUTED[key](r, self.batch_size) if key in COMPUTED else fmt(r.get(key))
                )
            if "pareto" in table.columns:
                cells.append("yes" if bool(r.get("pareto")) is True else "")
            rows.append(cells)
        return headers, rows

    # ------------------------------------------------------------------ sentences
    def headline(self) -> str:
        """One line: what the sweep decided, with the numbers that matter."""
        champ, teacher = self.row(self.champion), self.teacher()
        if self.champion_is_teacher() or champ is None:
            return (
                f"Champion: {self.champion} (no candidate met the selection policy; "
                "the uncompressed model stays)"
            )
        parts = []
        if _num(champ.get("speedup")) is not None:
            parts.append(f"{_num(champ['speedup']):.2f}x faster at batch {self.batch_size}")
        if _num(champ.get("rougeL_retention")) is not None:
            parts.append(
                f"keeps {100 * _num(champ['rougeL_retention']):.1f}% of the teacher's ROUGE-L"
            )
        if (
            teacher is not None
            and _num(champ.get("params_total"))
            and _num(teacher.get("params_total"))
        ):
            parts.append(
                f"{_num(champ['params_total']) / _num(teacher['params_total']):.0%} of "
                "its parameters"
            )
        return f"Champion: {self.champion}" + (f" ({', '.join(parts)})" if parts else "")

    def key_numbers(self, label: str) -> str:
        r = self.row(label)
        if r is None:
            return "not in the table"
        bits = [
            f"ROUGE-L {_f(3)(r.get('rougeL'))}" if _num(r.get("rougeL")) is not None else None,
            f"retention {_f(3)(r.get('rougeL_retention'))}"
            if r.get("method") != TEACHER and _num(r.get("rougeL_retention")) is not None
            else None,
            f"p50 {_f(1)(r.get('latency_p50_ms'))} ms / p90 "
            f"{_f(1)(r.get('latency_p90_ms'))} ms at batch {self.batch_size}"
            if _num(r.get("latency_p50_ms")) is not None
            else None,
            f"speedup {_speedup(r.get('speedup'))} "
            f"{_interval(r, f'speedup_bs{self.batch_size}', 2)}".rstrip()
            if r.get("method") != TEACHER and _num(r.get("speedup")) is not None
            else None,
            f"{_params(r.get('params_total'))} parameters"
            if _num(r.get("params_total")) is not None
            else None,
            f"{_int(r.get('decoder_layers'))} decoder layers"
            if _num(r.get("decoder_layers")) is not None
            else None,
            f"encoder sparsity {_f(3)(r.get('encoder_sparsity'))}"
            if r.get("method") != TEACHER and _num(r.get("encoder_sparsity")) is not None
            else None,
            f"cost {_cost(r.get('cost_per_1k_requests'))} per 1k requests"
            if _num(r.get("cost_per_1k_requests")) is not None
            else None,
        ]
        return ", ".join(b for b in bits if b)

    def hardware_line(self) -> str:
        return hardware_summary(self.hardware)

    def seed_lines(self) -> list[str]:
        """A sweep with experiment.seeds: each trained candidate's ROUGE-L per seed, and what
        the narrow encoder costs against SFT at the same depth, paired over seeds."""
        t = self.table
        seed_cols = sorted(
            (c for c in t.columns if re.fullmatch(r"rougeL_seed\d+", c)),
            key=lambda c: int(c.removeprefix("rougeL_seed")),
        )
        if not seed_cols:
            return []
        lines = []
        for _, r in t.iterrows():
            vals = [(c.removeprefix("rougeL_"), _num(r.get(c))) for c in seed_cols]
            if r.get("method") == TEACHER or any(v is None for _, v in vals):
                continue
            per = ", ".join(f"{name} {v:.3f}" for name, v in vals)
            line = f"{r['label']}: ROUGE-L {per}; {_over_seeds(r)}"
            delta = _num(r.get("rougeL_vs_sft_seeds_delta"))
            if delta is not None:
                lo, hi = (
                    _num(r.get("rougeL_vs_sft_seeds_ci_low")),
                    _num(r.get("rougeL_vs_sft_seeds_ci_high")),
                )
                better = _int(r.get("rougeL_vs_sft_seeds_better"))
                line += (
                    f"; vs SFT at the same depth {delta:+.3f} [{lo:+.3f}, {hi:+.3f}] over "
                    f"seeds and examples, better in {better} of {len(vals)} seeds"
                )
            lines.append(line)
        return lines


def hardware_summary(hw: dict) -> str:
    """One line from a benchmark's hardware fingerprint (``benchmark.hardware_fingerprint``)."""
    if not hw:
        return "unknown (no benchmark fingerprint recorded)"
    where = hw.get("gpu_name") or hw.get("cpu_model") or "unknown CPU"
    bits = [where]
    if not hw.get("gpu_name") and hw.get("cpu_cores_logical"):
        bits.append(f"{hw['cpu_cores_logical']} logical cores")
    if hw.get("torch_threads"):
        n = hw["torch_threads"]
        bits.append(f"{n} torch thread{'' if n == 1 else 's'}")
    bits += [str(hw[k]) for k in ("device", "dtype") if hw.get(k)]
    if hw.get("memory_gb"):
        bits.append(f"{hw['memory_gb']} GB RAM")
    versions = [
        f"torch {hw['torch_version']}" if hw.get("torch_version") else None,
        f"transformers {hw['transformers_version']}" if hw.get("transformers_version") else None,
        f"Python {hw['python_version']}" if hw.get("python_version") else None,
    ]
    line = ", ".join(bits)
    vs = ", ".join(v for v in versions if v)
    if vs:
        line += f"; {vs}"
    if hw.get("load_average_1m") is not None:
        line += f"; load average {hw['load_average_1m']} when measured"
    return line


# --------------------------------------------------------------------------- renderers
def to_text(rep: SweepReport) -> str:
    """What ``nash report`` prints: header, decision, aligned table, provenance."""
    headers, rows = rep.cells()
    for r in rows:
        r[0] += {"champion": " *", "tied": " ~"}.get(rep.mark(r[0]), "")
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    fmt_row = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i <= 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    lines = [
        f"sweep {rep.run_name} (run {rep.run_id}, experiment {rep.experiment}, "
        f"started {rep.started}, {rep.status})",
        rep.headline(),
        f"reason: {rep.reason}",
        "",
        fmt_row(headers),
        "  ".join("-" * w for w in widths),
    ]
    lines += [fmt_row(r) for r in rows]
    lines.append("* champion" + ("; ~ tied on speed with it (see the reason)" if rep.tied else ""))
    lines += [f"rejected {name}: {why}" for name, why in rep.rejected.items()]
    seeds = rep.seed_lines()
    if seeds:
        lines += ["", "quality over seeds (the served model is experiment.seed's):"]
        lines += [f"  {x}" for x in seeds]
    lines += ["", f"hardware: {rep.hardware_line()}"]
    if rep.base_fingerprint:
        lines.append(f"base model fingerprint: {rep.base_fingerprint}")
    if rep.registered:
        lines.append(f"registered: {rep.registered}")
    lines += [f"{name}: {url}" for name, url in rep.links.items()]
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_row(rep: SweepReport, r: list[str]) -> list[str]:
    """A table row's cells: the champion's in bold, a candidate tied with it flagged."""
    cells = [_md_escape(c) for c in r]
    if rep.mark(r[0]) == "champion":
        cells = [f"**{c}**" if c else c for c in cells]
        cells[0] += " (champion)"
    elif rep.mark(r[0]) == "tied":
        cells[0] += " (tied on speed)"
    return cells


def to_markdown(rep: SweepReport, image: str | None = None) -> str:
    """The sweep run's description: decision first (the UI shows ~100 px before "Show more"),
    then the table with the champion in bold, the Pareto plot, key numbers and provenance.

    ``image``: the plot's URL; in MLflow ``get-artifact?path=pareto.png&run_uuid=<run id>``.
    """
    headers, rows = rep.cells()
    out = [
        f"### {_md_escape(rep.headline())}",
        "",
        f"**Decision.** {_md_escape(rep.reason)}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * 2 + ["--:"] * (len(headers) - 2)) + "|",
    ]
    out += ["| " + " | ".join(_md_row(rep, r)) + " |" for r in rows]
    out.append("")
    if image:
        out += [f"![Pareto plot: ROUGE-L against latency]({image})", ""]
    teacher = rep.teacher()
    if teacher is not None:
        out.append(
            f"- **Teacher** ({_md_escape(teacher['label'])}): {rep.key_numbers(teacher['label'])}"
        )
    if not rep.champion_is_teacher():
        out.append(f"- **Champion** ({_md_escape(rep.champion)}): {rep.key_numbers(rep.champion)}")
    for name, why in rep.rejected.items():
        out.append(f"- not chosen: {_md_escape(name)}: {_md_escape(why)}")
    for line in rep.seed_lines():
        out.append(f"- over seeds: {_md_escape(line)}")
    out.append(f"- **Hardware**: {_md_escape(rep.hardware_line())}")
    if rep.base_fingerprint:
        out.append(f"- **Base model fingerprint**: `{rep.base_fingerprint}`")
    if rep.registered:
        out.append(f"- **Registered**: {_md_escape(rep.registered)}")
    for name, url in rep.links.items():
        out.append(f"- [{_md_escape(name)}]({url})")
    return "\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.champion{font-weight:bold;
background:#fff6d6}th{background:#f2f2f2}img{max-width:100%;margin:1em 0}code{font-size:90%}"""


def to_html(rep: SweepReport, image_png: bytes | None = None) -> str:
    """A standalone page for sharing (no external files: the plot is embedded)."""
    e = html.escape
    headers, rows = rep.cells()
    body = [
        f"<h1>NASH sweep {e(rep.run_name)}</h1>",
        f"<p>run <code>{e(rep.run_id)}</code>, experiment {e(rep.experiment)}, started "
        f"{e(rep.started)}, {e(rep.status)}</p>",
        f"<h2>{e(rep.headline())}</h2>",
        f"<p><b>Decision.</b> {e(rep.reason)}</p>",
        "<table><thead><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in headers)
        + "</tr></thead><tbody>",
    ]
    for r in rows:
        champ = rep.mark(r[0]) == "champion"
        label = e(r[0]) + {"champion": " (champion)", "tied": " (tied on speed)"}.get(
            rep.mark(r[0]), ""
        )
        tds = [f"<td>{label}</td>", f"<td>{e(r[1])}</td>"]
        tds += [f'<td class="n">{e(c)}</td>' for c in r[2:]]
        attr = ' class="champion"' if champ else ""
        body.append(f"<tr{attr}>{''.join(tds)}</tr>")
    body.append("</tbody></table>")
    if image_png:
        data = base64.b64encode(image_png).decode("ascii")
        body.append(
            f'<img alt="Pareto plot: ROUGE-L against latency" src="data:image/png;base64,{data}">'
        )
    items = []
    teacher = rep.teacher()
    if teacher is not None:
        items.append(
            f"<b>Teacher</b> ({e(teacher['label'])}): {e(rep.key_numbers(teacher['label']))}"
        )
    if not rep.champion_is_teacher():
        items.append(f"<b>Champion</b> ({e(rep.champion)}): {e(rep.key_numbers(rep.champion))}")
    items += [f"not chosen: {e(n)}: {e(w)}" for n, w in rep.rejected.items()]
    items += [f"over seeds: {e(line)}" for line in rep.seed_lines()]
    items.append(f"<b>Hardware</b>: {e(rep.hardware_line())}")
    if rep.base_fingerprint:
        items.append(f"<b>Base model fingerprint</b>: <code>{e(rep.base_fingerprint)}</code>")
    if rep.registered:
        items.append(f"<b>Registered</b>: {e(rep.registered)}")
    items += [f'<a href="{e(u)}">{e(n)}</a>' for n, u in rep.links.items()]
    body.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>NASH sweep '
        f"{e(rep.run_name)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def parse_rejected(decision_text: str) -> dict[str, str]:
    """``rejected NAME: why`` lines of a ``decision.txt`` (``Decision.as_text``)."""
    out = {}
    for line in decision_text.splitlines():
        if line.startswith("rejected ") and ": " in line:
            name, why = line.removeprefix("rejected ").split(": ", 1)
            out[name] = why
    return out


def parse_tied(decision_text: str) -> list[str]:
    """The ``tied on speed: A, B (chosen by ...)`` line of a ``decision.txt``: the champion
    first, then the candidates tied with it (empty when it won outright)."""
    for line in decision_text.splitlines():
        if line.startswith("tied on speed: "):
            names = line.removeprefix("tied on speed: ").split(" (chosen by ", 1)[0]
            return [n.strip() for n in names.split(", ") if n.strip()]
    return []
