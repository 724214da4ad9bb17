"""Output quality of one model under the one decoding protocol shared by teacher and candidates.

Why one protocol: speedups and quality retention are only comparable when every model decodes
with the same search settings. Hub models ship their own ``generation_config`` (BART-CNN: 4
beams, length penalty 2, min length 56...), so :func:`generation_config_for` builds a fresh
config from :class:`~nash_core.config.EvaluationConfig` and keeps only the model's token ids,
and :func:`run_generate` hides the model's own config during the call (``generate`` fills every
field we leave unset from it, e.g. ``min_length`` or ``bad_words_ids``).

Quality is ROUGE-1/2/L/Lsum F1 (rouge-score, Porter stemming). rougeLsum needs one sentence per
line; :func:`split_sentences` does that with a regex, so no NLTK data is downloaded. rouge-score's
default tokenizer keeps only ``[a-z0-9]`` (Cyrillic, CJK, accented words score 0):
``evaluation.rouge_tokenizer: unicode`` selects :class:`UnicodeTokenizer` for mT5 users.

A candidate is compared with the teacher example by example: quality retention (candidate /
teacher ROUGE-L) and a seeded paired bootstrap interval of (candidate - teacher) ROUGE-L.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from rouge_score import rouge_scorer, tokenizers
from tqdm.auto import tqdm
from transformers import GenerationConfig
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from nash_core.config import EvaluationConfig
from nash_core.errors import DataError
from nash_core.io import atomic_dir, read_json
from nash_core.progress import progress_disabled

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
#: Token-id fields taken from the model; every search setting comes from EvaluationConfig.
_TOKEN_ID_FIELDS = (
    "decoder_start_token_id",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)


# --------------------------------------------------------------------------- generation
def generation_config_for(
    model, eval_cfg: EvaluationConfig, fixed_new_tokens: int | None = None
) -> GenerationConfig:
    """The decoding protocol for ``model``: search settings from ``eval_cfg``, token ids from
    the model. ``fixed_new_tokens`` forces exactly that many new tokens (min = max), which
    compares architectures at equal output length."""
    ids = {f: getattr(model.generation_config, f, None) for f in _TOKEN_ID_FIELDS}
    new_max = fixed_new_tokens or eval_cfg.max_new_tokens
    new_min = fixed_new_tokens or eval_cfg.min_new_tokens
    return GenerationConfig(
        **{k: v for k, v in ids.items() if v is not None},
        do_sample=False,
        num_beams=eval_cfg.num_beams,
        max_new_tokens=new_max,
        min_new_tokens=new_min,
        length_penalty=eval_cfg.length_penalty,
        no_repeat_ngram_size=eval_cfg.no_repeat_ngram_size,
        early_stopping=eval_cfg.num_beams > 1,
    )


def fresh_cache() -> EncoderDecoderCache:
    """A KV cache that grows per layer on demand.

    ``generate``'s default cache is sized from ``num_hidden_layers``, which for T5 is the
    ENCODER depth: a decoder deeper than its encoder (our demo teacher: 4 + 6) raises
    IndexError. A growing cache is the same dynamic cache, only not pre-sized: any depth works.
    """
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def generated_lengths(sequences: torch.Tensor, eos_token_id) -> list[int]:
    """New tokens per row of a ``generate`` output, up to and including the first EOS.

    The first position is the decoder start token, not generated; EOS counts (it was computed).
    Counting up to EOS rather than "not padding" stays right when a model emits the pad id
    (random models do; T5's pad id is also its decoder start id).
    """
    new = sequences[:, 1:]
    if new.shape[1] == 0:
        return [0] * new.shape[0]
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    is_eos = (
        torch.isin(new, torch.tensor(eos, device=new.device))
        if eos
        else torch.zeros_like(new, dtype=torch.bool)
    )
    first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, new.shape[1])
    return first.tolist()


def run_generate(model, batch: dict, gen_cfg: GenerationConfig) -> torch.Tensor:
    """``model.generate`` under exactly ``gen_cfg``: the one call evaluation and benchmarks share.

    The model's own ``generation_config`` is swapped for ``gen_cfg`` during the call, because
    ``generate`` fills every unset field from it; a fresh growing cache is passed (see
    :func:`fresh_cache`). Not safe for concurrent calls on the SAME model object.
    """
    own = model.generation_config
    model.generation_config = gen_cfg
    try:
        with torch.inference_mode():
            return model.generate(**batch, generation_config=gen_cfg, cache=fresh_cache())
    finally:
        model.generation_config = own


def _generate_batches(
    model,
    tokenizer,
    sources: Sequence[str],
    eval_cfg: EvaluationConfig,
    device,
    max_source_length: int | None,
) -> Iterator[tuple[list[str], list[int]]]:
    gen_cfg = generation_config_for(model, eval_cfg)
    bs = eval_cfg.batch_size
    batches = range(0, len(sources), bs)
    for start in tqdm(batches, desc="generate", unit="batch", disable=progress_disabled()):
        enc = tokenizer(
            list(sources[start : start + bs]),
            return_tensors="pt",
            padding=True,
            truncation=max_source_length is not None,
            max_length=max_source_length,
        )
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        out = run_generate(model, enc, gen_cfg)
        yield (
            tokenizer.batch_decode(out, skip_special_tokens=True),
            generated_lengths(out, gen_cfg.eos_token_id),
        )


def generate(
    model,
    tokenizer,
    sources: Sequence[str],
    eval_cfg: EvaluationConfig,
    device=None,
    max_source_length: int | None = None,
) -> list[str]:
    """Batched generation of ``sources`` (prefix already applied) with the shared protocol."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return [
        t
        for texts, _ in _generate_batches(
            model, tokenizer, sources, eval_cfg, device, max_source_length
        )
        for t in texts
    ]


# --------------------------------------------------------------------------- ROUGE
# A sentence ends at . ! ? or an ellipsis followed by whitespace, or at CJK full stops (no space
# needed), or at a line break. Abbreviations ("Dr. Smith") are split too: a known, small
# difference from NLTK's punkt, which would need downloaded data.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|(?<=[\u3002\uff01\uff1f])\s*|\s*\n\s*")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with a regex (no downloaded data)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _lines(text: str) -> str:
    return "\n".join(split_sentences(text))


# Characters of scripts written without spaces (kana, CJK ideographs) become one token each;
# every other run of letters/digits (any script) is one token.
_NO_SPACE_SCRIPTS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNICODE_TOKEN = re.compile(rf"[{_NO_SPACE_SCRIPTS}]|[^\W_{_NO_SPACE_SCRIPTS}]+")


class UnicodeTokenizer(tokenizers.Tokenizer):
    """rouge-score tokenizer for any script: lower-cased letter/digit runs, CJK per character.

    On ASCII text it yields exactly what rouge-score's default tokenizer yields (Porter stemming
    of ASCII words longer than 3 characters); other words are kept whole, not stemmed. Thai,
    Lao, Khmer (no spaces, not split here) are scored per run and under-count matches.
    """

    def __init__(self, use_stemmer: bool = True):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _UNICODE_TOKEN.findall(text.lower())
        if self._stemmer is None:
            return tokens
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


def _scorer(tokenizer: str) -> rouge_scorer.RougeScorer:
    if tokenizer not in ("default", "unicode"):
        raise ValueError(f"rouge tokenizer must be 'default' or 'unicode', got {tokenizer!r}")
    custom = UnicodeTokenizer() if tokenizer == "unicode" else None
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, tokenizer=custom)


def rouge_scores(
    preds: Sequence[str], refs: Sequence[str], tokenizer: str = "default"
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean ROUGE F1 over examples, and the per-example F1 (same keys: rouge1/2/L/Lsum).

    Sentences are put on separate lines first, which only matters for rougeLsum.
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise DataError(
            "no examples to score: the test split (or evaluation.num_examples) is empty"
        )
    scorer = _scorer(tokenizer)
    per = []
    for p, r in zip(preds, refs):
        s = scorer.score(_lines(r), _lines(p))
        per.append({k: float(s[k].fmeasure) for k in ROUGE_TYPES})
    mean = {k: float(np.mean([e[k] for e in per])) for k in ROUGE_TYPES}
    return mean, per


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------- teacher comparison
def paired_bootstrap(
    cand: Sequence[float],
    teacher: Sequence[float],
    n: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of mean(candidate - teacher) over ``n`` resamples of the examples.

    Paired: one resample draws example indices and takes both models' scores for them, so
    example difficulty cancels. Identical scores give exactly (0, 0).
    """
    d = np.asarray(cand, dtype=np.float64) - np.asarray(teacher, dtype=np.float64)
    if d.ndim != 1 or len(cand) != len(teacher) or d.size == 0:
        raise ValueError(
            f"paired bootstrap needs two equal, non-empty score lists "
            f"(got {len(cand)} and {len(teacher)})"
        )
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    chunk = max(1, 2_000_000 // d.size)  # bound memory for large test sets
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        means[start : start + m] = d[rng.integers(0, d.size, size=(m, d.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def quality_retention(candidate: float, teacher: float) -> float | None:
    """candidate / teacher; None when the teacher scores 0 (the ratio means nothing)."""
    return candidate / teacher if teacher > 0 else None


def compare_with_teacher(
    per_example: list[dict],
    teacher_eval_dir: str | Path,
    protocol: dict,
    eval_cfg: EvaluationConfig,
    seed: int = 0,
) -> dict:
    """Retention and the bootstrap CI of (candidate - teacher) ROUGE-L, on the same examples.

    Refuses a teacher evaluation made on other examples or with another decoding protocol.
    """
    tdir = Path(teacher_eval_dir)
    try:
        t_meta = read_json(tdir / "metrics.json")
        t_rows = [
            json.loads(line)
            for line in (tdir / "per_example.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read the teacher evaluation in {tdir} ({exc}); evaluate the "
            "teacher first with evaluate_model"
        ) from None
    if t_meta.get("protocol") != protocol:
        raise DataError(
            f"the teacher evaluation in {tdir} used another decoding protocol "
            f"{t_meta.get('protocol')} than this one {protocol}; re-evaluate both "
            "with the same evaluation settings"
        )
    if len(t_rows) != len(per_example):
        raise DataError(
            f"the teacher evaluation in {tdir} has {len(t_rows)} examples, this one "
            f"{len(per_example)}; use the same test split and evaluation.num_examples"
        )
    for i, (a, b) in enumerate(zip(per_example, t_rows)):
        if a["reference"] != b["reference"]:
            raise DataError(
                f"test example {i} differs from the teacher evaluation in {tdir}; "
                "evaluate teacher and candidate on the same prepared splits"
            )
    cand = [r["rougeL"] for r in per_example]
    teach = [r["rougeL"] for r in t_rows]
    low, high = paired_bootstrap(cand, teach, eval_cfg.bootstrap_samples, eval_cfg.confidence, seed)
    c_mean, t_mean = float(np.mean(cand)), float(np.mean(teach))
    return {
        "teacher_rougeL": t_mean,
        "rougeL_retention": quality_retention(c_mean, t_mean),
        "rougeL_delta": c_mean - t_mean,
        "rougeL_delta_ci_low": low,
        "rougeL_delta_ci_high": high,
        # the same interval as a fraction of the teacher (what the selection policy reads)
        "rougeL_retention_ci_low": 1.0 + low / t_mean if t_mean > 0 else None,
        "rougeL_retention_ci_high": 1.0 + high / t_mean if t_mean > 0 else None,
    }


def compare_evaluations(
    eval_dir: str | Path, baseline_dir: str | Path, eval_cfg: EvaluationConfig, seed: int = 0
) -> dict:
    """Paired-bootstrap interval of (model - baseline) ROUGE-L from two evaluate_model outputs.

    Both must have scored the same test examples with the same decoding protocol (e.g. a NASH
    candidate against the SFT candidate of the same decoder depth: does the narrow encoder cost
    anything measurable?).
    """

    def read(d: Path) -> tuple[dict, list[dict]]:
        try:
            meta = read_json(d / "metrics.json")
            rows = [
                json.loads(line)
                for line in (d / "per_example.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the evaluation in {d} ({exc})") from None
        return meta, rows

    (a_meta, a), (b_meta, b) = read(Path(eval_dir)), read(Path(baseline_dir))
    if a_meta.get("protocol") != b_meta.get("protocol"):
        raise DataError(f"{eval_dir} and {baseline_dir} used different decoding protocols")
    if [r["reference"] for r in a] != [r["reference"] for r in b]:
        raise DataError(f"{eval_dir} and {baseline_dir} scored different test examples")
    ca, cb = [r["rougeL"] for r in a], [r["rougeL"] for r in b]
    low, high = paired_bootstrap(ca, cb, eval_cfg.bootstrap_samples, eval_cfg.confidence, seed)
    return {"delta": float(np.mean(ca) - np.mean(cb)), "ci_low": low, "ci_high": high}


# --------------------------------------------------------------------------- evaluate_model
def _sample_csv(rows: list[dict], preds: list[str], per: list[dict], n: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["source", "reference", "prediction", "rougeL"])
    for row, pred, s in list(zip(rows, preds, per))[:n]:
        w.writerow([row["source"], row["target"], pred, f"{s['rougeL']:.4f}"])
    return buf.getvalue()


def evaluate_model(
    model_dir: str | Path,
    splits_dir: str | Path,
    eval_cfg: EvaluationConfig,
    out_dir: str | Path,
    teacher_eval_dir: str | Path | None = None,
    device=None,
    *,
    source_prefix: str = "",
    max_source_length: int | None = None,
    split: str = "test",
    seed: int = 0,
) -> dict:
    """Generate for the test split, score it, compare with the teacher, write the results.

    Writes ``out_dir`` atomically: metrics.json ({"metrics", "protocol", "model_dir"}),
    predictions_sample.csv (source, reference, prediction, rougeL) and per_example.jsonl.
    ``teacher_eval_dir`` is the ``out_dir`` of the teacher's own evaluate_model call.
    Returns the flat metrics (numbers only, ready to log): rouge1/2/L/Lsum, gen_len_tokens,
    gen_len_words, exact_match (if enabled), num_examples, and with a teacher
    teacher_rougeL, rougeL_retention, rougeL_delta, rougeL_delta_ci_low/high.
    """
    from nash_core.data import read_split
    from nash_core.quantize import default_device, load_for_measurement

    rows = read_split(splits_dir, split, limit=eval_cfg.num_examples)
    if not rows:
        raise DataError(f"split '{split}' in {splits_dir} is empty: nothing to evaluate")
    device = default_device([model_dir]) if device is None else torch.device(device)
    model, tokenizer = load_for_measurement(model_dir, device=device)
    sources = [source_prefix + r["source"] for r in rows]
    preds, lengths = [], []
    for texts, lens in _generate_batches(
        model, tokenizer, sources, eval_cfg, device, max_source_length
    ):
        preds += texts
        lengths += lens
    refs = [r["target"] for r in rows]
    mean, per = rouge_scores(preds, refs, eval_cfg.rouge_tokenizer)
    metrics: dict = {
        **mean,
        "num_examples": len(rows),
        "gen_len_tokens": float(np.mean(lengths)),
        "gen_len_words": float(np.mean([len(p.split()) for p in preds])),
    }
    exact = [normalize_answer(p) == normalize_answer(r) for p, r in zip(preds, refs)]
    if eval_cfg.exact_match:
        metrics["exact_match"] = float(np.mean(exact))
    per_example = [
        {"index": i, "reference": r, "prediction": p, "gen_len_tokens": n, "exact_match": e, **s}
        for i, (r, p, n, e, s) in enumerate(zip(refs, preds, lengths, exact, per))
    ]
    protocol = {
        **generation_config_for(model, eval_cfg).to_diff_dict(),
        "rouge_tokenizer": eval_cfg.rouge_tokenizer,
        "source_prefix": source_prefix,
        "max_source_length": max_source_length,
    }
    protocol = {
        k: v for k, v in protocol.items() if k not in _TOKEN_ID_FIELDS + ("transformers_version",)
    }
    if teacher_eval_dir is not None:
        metrics.update(
            compare_with_teacher(per_example, teacher_eval_dir, protocol, eval_cfg, seed)
        )
    with atomic_dir(out_dir) as tmp:
        (tmp / "metrics.json").write_text(
            json.dumps(
                {"metrics": metrics, "protocol": protocol, "model_dir": str(model_dir)},
                indent=2,
                sort_keys=True,
            )
            + "\n",
            encoding="utf-8",
        )
        (tmp / "per_example.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_example), encoding="utf-8"
        )
        (tmp / "predictions_sample.csv").write_text(
            _sample_csv(rows, preds, per, eval_cfg.predictions_sample), encoding="utf-8"
        )
    return metrics
