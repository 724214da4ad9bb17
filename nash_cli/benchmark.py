"""``nash benchmark``: time model directories, or re-benchmark a finished sweep (``--sweep``).

    nash benchmark MODEL_DIR [MODEL_DIR ...] [--batch-sizes 1,8] [--new-tokens N] [--json FILE]
    nash benchmark --sweep RUN_ID [--hardware-name NAME] [--price-per-hour P] [--tracking-uri URI]

One subcommand, one parser: either model directories (the first is the baseline; timed in one
process, interleaved; :func:`nash_core.benchmark.benchmark_models`) or ``--sweep`` (the sweep's
teacher and candidates fetched from MLflow and timed with its protocol on the inputs it timed;
:func:`nash_mlflow.rebenchmark.rebenchmark_sweep`). Bad input exits 2 with one message.
"""

from __future__ import annotations

import argparse

#: Options that only mean something when timing model directories.
_DIR_ONLY = (
    "batch_sizes",
    "new_tokens",
    "max_new_tokens",
    "num_beams",
    "modes",
    "repeats",
    "warmup",
    "num_inputs",
    "source_length",
    "splits",
    "source_prefix",
    "max_source_length",
    "dtype",
    "json",
)


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return vals


def add_benchmark_command(sub) -> None:
    """The ``benchmark`` subcommand on the ``nash`` parser."""
    from nash_cli.rollout import store_args

    p = sub.add_parser(
        "benchmark",
        help="time generate() of model dirs (first = baseline), or re-benchmark a "
        "finished sweep on this machine (--sweep RUN_ID)",
        description="Time generate() of seq2seq model dirs (the first is the baseline) in one "
        "process, interleaved; print a table and write the full results as JSON. With "
        "--sweep RUN_ID instead: fetch a finished sweep's teacher and candidates from "
        "MLflow, time them with the sweep's protocol on the inputs it timed, and log the "
        "figures to the same runs as hw/<NAME>/<metric> (the sweep's own figures stay), "
        "with a trade-off table, Pareto plot and hardware fingerprint on the sweep run "
        "under hardware/<NAME>/.",
    )
    p.add_argument("model_dirs", nargs="*", metavar="MODEL_DIR")
    p.add_argument(
        "--sweep", metavar="RUN_ID", help="re-benchmark this finished sweep (its parent run id)"
    )
    p.add_argument("--batch-sizes", type=_int_list, default=None, help="e.g. 1,8")
    p.add_argument("--new-tokens", type=int, default=None, help="new tokens of the fixed mode")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap of the natural mode")
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--modes", default=None, help="natural, fixed or both (default both)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--num-inputs", type=int, default=None)
    p.add_argument(
        "--source-length",
        type=int,
        default=None,
        help="tokens per random input row when --splits is not given (default 64)",
    )
    p.add_argument("--splits", metavar="DIR", help="prepared splits dir: use real test sources")
    p.add_argument("--source-prefix", default=None, help="prepended to each test source")
    p.add_argument("--max-source-length", type=int, default=None)
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=None,
        help="default: cuda if seen (--sweep: the sweep's experiment.device)",
    )
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (--sweep default: the sweep's experiment.torch_threads)",
    )
    p.add_argument(
        "--price-per-hour",
        type=float,
        default=None,
        help="this hardware's price (USD/h) for cost per 1k requests / 1M tokens "
        "(--sweep default: the sweep's benchmark.price_per_hour)",
    )
    p.add_argument(
        "--hardware-name",
        help="name of this machine in metric keys and aliases (letters, digits, '_', '-'; "
        "default from the hardware fingerprint)",
    )
    p.add_argument("--json", metavar="FILE", help="write the full results here")
    store_args(p, "with --sweep: ")
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args) -> int:
    from nash_core.errors import NashError

    if args.sweep and args.model_dirs:
        raise NashError("benchmark: pass model dirs or --sweep RUN_ID, not both")
    if args.sweep:
        used = [f"--{o.replace('_', '-')}" for o in _DIR_ONLY if getattr(args, o) is not None]
        if used:
            raise NashError(
                f"benchmark --sweep: {', '.join(used)} time model dirs only; a sweep "
                "is re-benchmarked with its own settings"
            )
        return benchmark_sweep(args)
    if not args.model_dirs:
        raise NashError("benchmark: pass at least one MODEL_DIR, or --sweep RUN_ID")
    return benchmark_dirs(args)


def _configs(args):
    """The benchmark and evaluation configs of the options (schema defaults where unset)."""
    from pydantic import ValidationError

    from nash_core.config import BenchmarkConfig, EvaluationConfig
    from nash_core.errors import NashError

    bench = {
        "batch_sizes": args.batch_sizes,
        "num_inputs": args.num_inputs,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "fixed_new_tokens": args.new_tokens,
        "dtype": args.dtype,
        "price_per_hour": args.price_per_hour,
        "hardware_name": args.hardware_name,
    }
    evaluation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    try:
        return (
            BenchmarkConfig(**{k: v for k, v in bench.items() if v is not None}),
            EvaluationConfig(**{k: v for k, v in evaluation.items() if v is not None}),
        )
    except ValidationError as exc:
        raise NashError(f"bad option value: {exc}") from None


def benchmark_dirs(args) -> int:
    """Time the model directories (the first is the baseline); print the table."""
    import torch

    from nash_core.benchmark import MODES, benchmark_models, format_table
    from nash_core.errors import NashError
    from nash_core.io import atomic_write_json

    modes = [m.strip() for m in (args.modes or "natural,fixed").split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise NashError(f"--modes: unknown mode(s) {bad or modes}; use natural, fixed or both")
    bench_cfg, eval_cfg = _configs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = None
    if args.splits:
        from nash_core.data import read_split

        texts = [
            (args.source_prefix or "") + r["source"]
            for r in read_split(args.splits, "test", limit=bench_cfg.num_inputs)
        ]
    result = benchmark_models(
        args.model_dirs,
        bench_cfg,
        eval_cfg,
        texts=texts,
        source_length=args.source_length or 64,
        max_source_length=args.max_source_length,
        device=None if args.device in (None, "auto") else args.device,
        modes=modes,
    )
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"full results: {args.json}")
    return 0


def benchmark_sweep(args) -> int:
    """Re-benchmark a finished sweep here and log the figures under a hardware name."""
    from nash_cli.rollout import tracking_store
    from nash_core.benchmark import format_table
    from nash_mlflow.rebenchmark import rebenchmark_sweep

    out = rebenchmark_sweep(
        tracking_store(args),
        args.sweep,
        hardware_name=args.hardware_name,
        price_per_hour=args.price_per_hour,
        device=args.device,
        threads=args.threads,
    )
    print(format_table(out["result"]))
    print(
        f"hardware '{out['hardware_name']}': figures logged to {len(out['metrics'])} candidate "
        f"runs as hw/{out['hardware_name']}/...; table and Pareto plot on sweep run "
        f"{args.sweep} under hardware/{out['hardware_name']}/"
    )
    return 0
