"""The names of the speed figures a candidate run carries (one list, used everywhere).

:func:`nash_core.benchmark.flat_metrics` logs every :data:`SPEED_METRICS` name per batch size
(``latency_p50_ms_bs4``); :func:`with_headline` adds the :data:`HEADLINE` ones once more without
the suffix, at the selection's batch size -- the sweep's candidate runs and a re-benchmark's
``hw/<name>/...`` figures alike. A re-benchmark replaces all of them in a hardware's table
(:func:`nash_core.promotion.hardware_table`). No torch import: the CLI reads these quickly.
"""

from __future__ import annotations

#: Everything the benchmark logs per batch size (``<name>_bs<N>``).
SPEED_METRICS = (
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_mean_ms",
    "latency_min_ms",
    "encoder_ms",
    "decoder_ms",
    "ms_per_token",
    "tokens_per_s",
    "sequences_per_s",
    "speedup",
    "peak_mem_mb",
    "cost_per_1k_requests",
    "cost_per_1m_tokens",
    "bench_rounds",
    "bench_extra_rounds",
)
#: Also logged without the ``_bs<N>`` suffix, at ``selection.batch_size``.
HEADLINE = (
    "latency_p50_ms",
    "latency_p90_ms",
    "speedup",
    "tokens_per_s",
    "peak_mem_mb",
    "cost_per_1k_requests",
    "ms_per_token",
    "encoder_ms",
    "decoder_ms",
)


def with_headline(flat: dict[str, float], batch_size: int) -> dict[str, float]:
    """``flat`` plus the :data:`HEADLINE` figures of ``batch_size`` under their plain names,
    with their intervals where logged (``speedup_bs1_low`` -> ``speedup_low``)."""
    out = dict(flat)
    for name in HEADLINE:
        for end in ("", "_low", "_high"):
            if f"{name}_bs{batch_size}{end}" in flat:
                out[f"{name}{end}"] = flat[f"{name}_bs{batch_size}{end}"]
    return out
