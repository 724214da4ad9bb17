"""``nash init``: write a commented config for your own model and data (nash_core/init_config.py).

    nash init --model DIR_OR_HUB_ID --data FILE [FILE ...] | HUB_DATASET
              [--source-column X --target-column Y] [--time-budget 2h]
              [--output configs/mine.yaml] [--train-teacher] [--force]

Where the columns cannot be told from the data it asks, if stdin is a terminal; otherwise the
flags are required. Bad input exits 2 with one line, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def ask_terminal(question: str, choices: Sequence[str]) -> str:
    """Ask on the terminal until one of ``choices`` (by name or number) is given."""
    listing = ", ".join(f"{i}) {c}" for i, c in enumerate(choices, 1))
    while True:
        answer = input(f"{question}? {listing}: ").strip()
        if answer in choices:
            return answer
        if answer.isdigit() and 1 <= int(answer) <= len(choices):
            return choices[int(answer) - 1]
        print(f"  please answer one of: {', '.join(choices)}", file=sys.stderr)


def cmd_init(args) -> int:
    from nash_core.init_config import make_plan, write_config

    output = Path(args.output)
    plan = make_plan(
        args.model,
        args.data,
        output,
        source_column=args.source_column,
        target_column=args.target_column,
        time_budget_s=args.time_budget,
        train_teacher=args.train_teacher,
        ask=ask_terminal if sys.stdin.isatty() else None,
    )
    write_config(plan, output, force=args.force)
    m, d = plan.model, plan.data
    arms = ", ".join(
        f"{a['method']}-k{a['decoder_layers']}" if "decoder_layers" in a else a["method"]
        for a in plan.arms
    )
    print(
        f"{output}: {m.family} with {m.decoder_layers} decoder layers; data "
        f"'{d.source_column}' -> '{d.target_column}', {d.rows('train')} training rows; arms: "
        f"{arms}; variants: {', '.join(plan.variants)}"
    )
    print(f"next: nash validate {output} && nash run {output}")
    return 0


def _duration(text: str) -> float:
    from nash_core.init_config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_init_command(sub) -> None:
    p = sub.add_parser(
        "init",
        help="write a commented config for your own model and data (detects the architecture, "
        "decoder depth and text columns)",
        description="Detects the architecture (T5, T5 v1.1 / Flan-T5, mT5, BART) and decoder "
        "depth of --model, the text columns of --data, proposes arms and step counts, and "
        "writes a config that `nash validate` accepts.",
    )
    p.add_argument("--model", required=True, help="a save_pretrained directory or a hub id")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="one CSV / JSONL / JSON / Parquet file (cut 80/10/10), files named by split "
        "(train / validation / test), or a hub dataset id",
    )
    p.add_argument("--source-column", help="column holding the text to summarise")
    p.add_argument("--target-column", help="column holding the reference summary")
    p.add_argument(
        "--time-budget",
        type=_duration,
        help="e.g. 2h or 90m: caps each training step's time (max_time_s)",
    )
    p.add_argument("--output", default="configs/mine.yaml", help="default configs/mine.yaml")
    p.add_argument(
        "--train-teacher",
        action="store_true",
        help="fine-tune the model on the data first (default for a hub id; a local directory "
        "is taken as the fine-tuned teacher as it is)",
    )
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.set_defaults(func=cmd_init)
