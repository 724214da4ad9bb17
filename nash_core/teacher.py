"""Stage 1 of NASH: the teacher, i.e. the base model fine-tuned on the task.

Every candidate is distilled from it and judged against it, so it is trained once per
(data, base model, teacher config) and saved as a normal HF directory with its tokenizer. A user
who already has a fine-tuned model sets ``teacher.path`` and skips training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nash_core.base_model import BaseInfo
from nash_core.config import NashConfig
from nash_core.data import read_split, tokenize_split
from nash_core.errors import TrainingError
from nash_core.loading import load_seq2seq
from nash_core.runtime import pick_device, seed_everything, set_threads
from nash_core.train import train_seq2seq


def train_teacher(
    cfg: NashConfig,
    splits_dir: str | Path,
    base_info: BaseInfo,
    out_dir: str | Path,
    callback: Callable[[int, dict], Any] | None = None,
) -> Path:
    """Fine-tune the base model with ``cfg.teacher.train``; return the best HF directory.

    The best checkpoint is the one with the lowest validation loss. ``out_dir`` also holds the
    resumable ``checkpoint/``: calling again after an interruption continues the run.
    """
    if cfg.teacher.path:
        return Path(cfg.teacher.path)
    seed_everything(cfg.experiment.seed)
    set_threads(cfg.experiment.torch_threads)
    device = pick_device(cfg.experiment.device)
    model, tokenizer = load_seq2seq(
        base_info.path,
        attn=cfg.model.attn_implementation,
        revision=base_info.revision,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    train_ds = tokenize_split(splits_dir, "train", tokenizer, cfg.data)
    val_ds = tokenize_split(splits_dir, "validation", tokenizer, cfg.data)
    result = train_seq2seq(
        model,
        tokenizer,
        train_ds,
        val_ds,
        cfg.teacher.train,
        out_dir,
        callback=callback,
        seed=cfg.experiment.seed,
        device=device,
    )
    if result.best_dir is None:  # cannot happen without hooks; guard the contract anyway
        raise TrainingError(f"teacher training in {out_dir} produced no best checkpoint")
    return result.best_dir


def quick_check(
    model_dir: str | Path,
    splits_dir: str | Path,
    cfg: NashConfig,
    split: str = "test",
    limit: int | None = None,
    device=None,
) -> dict:
    """ROUGE-L and exact match under ``cfg.evaluation``'s decoding: the demo bench's check.

    The sweep's real evaluation (bootstrap, per-example files) is
    :func:`nash_core.evaluate.evaluate_model`; this only reuses its generation and scoring.
    """
    from nash_core.evaluate import generate, normalize_answer, rouge_scores

    model, tokenizer = load_seq2seq(model_dir, device=device)
    rows = read_split(splits_dir, split, limit)
    preds = generate(
        model,
        tokenizer,
        [cfg.data.source_prefix + r["source"] for r in rows],
        cfg.evaluation,
        max_source_length=cfg.data.max_source_length,
    )
    refs = [r["target"] for r in rows]
    mean, _ = rouge_scores(preds, refs)
    exact = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(preds, refs))
    return {
        "rougeL": mean["rougeL"],
        "rouge1": mean["rouge1"],
        "exact_match": exact / len(rows),
        "examples": len(rows),
        "sample": {"prediction": preds[0], "reference": refs[0]},
    }
