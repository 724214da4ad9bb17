"""The structure x precision table of docs/structure-precision.md, from a finished sweep.

    .venv/bin/python benchmarks/compare_table.py --workdir .nash [--config-name demo-compare]

Reads the latest finished sweep of that config from the workdir's MLflow store and prints one
Markdown row per candidate: quality, speed (natural output length, and a fixed number of new
tokens -- ``benchmark.fixed_new_tokens`` -- which isolates the architecture from how long each
model's summaries are), parameters, non-zero parameters, the zero fraction
of the linear weights, the served weights' bytes (in the variant's precision), the safetensors
size on disk and what a generic compressor (zlib level 6) makes of it -- the most the zeros of
an unstructured model buy on disk without a sparse format -- and the hardware fingerprint.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

from mlflow.tracking import MlflowClient

from nash_core.report import structure_and_precision


def compressed_mb(model_dir: Path) -> float:
    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        c = zlib.compressobj(6)
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                total += len(c.compress(block))
        total += len(c.flush())
    return total / 2**20


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=".nash")
    ap.add_argument("--config-name", default="demo-compare")
    args = ap.parse_args(argv)
    work = Path(args.workdir).resolve()
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    exps = [e.experiment_id for e in client.search_experiments()]
    sweeps = client.search_runs(
        exps,
        f"tags.`nash.kind` = 'sweep' and tags.`nash.config_name` = '{args.config_name}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not sweeps:
        raise SystemExit(f"no finished sweep of config '{args.config_name}' in {work}")
    sweep = sweeps[0]
    runs = client.search_runs(
        exps, f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'", max_results=500
    )
    order = {r.data.tags["nash.label"]: r for r in runs}
    head = (
        "| candidate | precision | decoder layers | params | non-zero params | zeros in linear "
        "weights | served weights | on disk (safetensors) | on disk, zlib | ROUGE-L | retention "
        "(95% low) | p50 latency, batch 1 | speedup, batch 1 | speedup, batch 1, fixed length "
        "| speedup, batch 8 |"
    )
    print(head)
    print("|" + " --- |" * head.count(" | ") + " --- |")
    hardware = None
    # the models as trained first, then their precision variants (int8, bf16, fp16)
    for label in sorted(order, key=lambda x: (structure_and_precision(x)[1] != "fp32", x)):
        r = order[label]
        m, p, t = r.data.metrics, r.data.params, r.data.tags
        precision = p.get("quantization", "none")
        model_dir = Path(t["nash.model_dir"])
        marker = model_dir / "nash_quantized.json"
        source = (
            Path(json.loads(marker.read_text())["source_absolute"])
            if marker.exists()
            else model_dir
        )
        zl = compressed_mb(source) if precision == "none" else None
        bench = Path(work) / "sweeps" / sweep.info.run_id / label / "benchmark.json"
        if hardware is None and bench.exists():
            hardware = json.loads(bench.read_text()).get("hardware")
        print(
            f"| {label} | {'fp32' if precision == 'none' else precision} | {p['decoder_layers']} "
            f"| {m['params_total'] / 1e6:.2f}M | {m.get('params_nonzero', 0) / 1e6:.2f}M "
            f"| {m.get('weight_zero_fraction', 0):.3f} | {m.get('weights_mb', 0):.1f} MB "
            f"| {m.get('disk_mb', 0):.1f} MB{'' if not marker.exists() else ' (source)'} "
            f"| {'' if zl is None else f'{zl:.1f} MB'} | {m['rougeL']:.3f} "
            f"| {m['rougeL_retention']:.3f} ({m.get('rougeL_retention_ci_low', 1.0):.3f}) "
            f"| {m['latency_p50_ms_bs1']:.1f} ms | {m['speedup_bs1']:.2f}x "
            f"| {m.get('fixed_speedup_bs1', float('nan')):.2f}x "
            f"| {m.get('speedup_bs8', float('nan')):.2f}x |"
        )
    print()
    print(f"sweep run {sweep.info.run_id}; hardware: {json.dumps(hardware)}")


if __name__ == "__main__":
    main()
