"""ROUGE on hand-checked pairs, sentence splitting, the paired bootstrap, evaluate_model end to
end."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from measure_tiny import ROWS, save_tiny_t5, write_splits
from rouge_score import tokenizers
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

from nash_core import evaluate as E
from nash_core.config import EvaluationConfig
from nash_core.errors import DataError


# --------------------------------------------------------------------------- ROUGE
def test_rouge_hand_checked_pair():
    # unigrams: the x2, cat, on, mat shared -> 5/6; bigrams: "the cat", "on the", "the mat" -> 3/5;
    # LCS "the cat on the mat" -> 5/6.
    mean, per = E.rouge_scores(["the cat sat on the mat"], ["the cat was on the mat"])
    assert per[0]["rouge1"] == pytest.approx(5 / 6)
    assert per[0]["rouge2"] == pytest.approx(3 / 5)
    assert per[0]["rougeL"] == pytest.approx(5 / 6)
    assert mean == per[0]


def test_rouge_stems_and_averages_over_examples():
    mean, per = E.rouge_scores(["cats running", "alpha beta"], ["cat runs", "gamma delta"])
    assert per[0]["rouge1"] == 1.0  # Porter: cats -> cat, running/runs -> run
    assert per[1]["rouge1"] == 0.0
    assert mean["rouge1"] == pytest.approx(0.5)


def test_split_sentences_regex():
    assert E.split_sentences("Anna is late. Bob waits! Is it ok?  yes\nno") == [
        "Anna is late.",
        "Bob waits!",
        "Is it ok?",
        "yes",
        "no",
    ]
    assert E.split_sentences("我来了。你好！") == ["我来了。", "你好！"]
    assert E.split_sentences("3.5 apples") == ["3.5 apples"]  # no space after the dot
    assert E.split_sentences("  ") == []


def test_rouge_lsum_uses_sentences():
    # LCS over the whole text: "a b" or "c d" -> 2/4; summary-level LCS per sentence: 4/4.
    mean, _ = E.rouge_scores(["Cc dd. Aa bb."], ["Aa bb. Cc dd."])
    assert mean["rougeL"] == pytest.approx(0.5)
    assert mean["rougeLsum"] == pytest.approx(1.0)


def test_unicode_tokenizer_matches_default_on_english_and_scores_other_scripts():
    default, uni = tokenizers.DefaultTokenizer(use_stemmer=True), E.UnicodeTokenizer()
    for text in ["Anna's meetings were moved to 5 p.m., said Bob_2!", "The CATS are running."]:
        assert uni.tokenize(text) == default.tokenize(text)
    ru = ["Анна и Борис встречаются в кафе"]
    assert E.rouge_scores(ru, ru)[0]["rouge1"] == 0.0  # rouge-score's default drops Cyrillic
    assert E.rouge_scores(ru, ru, tokenizer="unicode")[0]["rouge1"] == 1.0
    assert uni.tokenize("我们在café见面") == ["我", "们", "在", "café", "见", "面"]
    # 2 of 3 characters shared
    shared = E.rouge_scores(["我们见"], ["我们走"], tokenizer="unicode")[0]["rouge1"]
    assert shared == pytest.approx(2 / 3)


def test_rouge_rejects_mismatch_and_empty():
    with pytest.raises(ValueError):
        E.rouge_scores(["a"], ["a", "b"])
    with pytest.raises(DataError):
        E.rouge_scores([], [])


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_identical_outputs_give_exactly_zero():
    scores = [0.1, 0.5, 0.9, 0.3]
    assert E.paired_bootstrap(scores, scores, n=200, seed=3) == (0.0, 0.0)


def test_bootstrap_all_better_is_above_zero_and_seeded():
    teacher = [0.2, 0.4, 0.6, 0.1, 0.3]
    cand = [t + d for t, d in zip(teacher, [0.01, 0.05, 0.02, 0.1, 0.03])]
    low, high = E.paired_bootstrap(cand, teacher, n=500, seed=1)
    assert 0.01 <= low < high <= 0.1
    assert E.paired_bootstrap(cand, teacher, n=500, seed=1) == (low, high)


def test_bootstrap_mixed_differences_straddle_zero_around_the_mean():
    d = [0.2, -0.2, 0.1, -0.1, 0.05, -0.05] * 5
    low, high = E.paired_bootstrap([0.5 + x for x in d], [0.5] * len(d), n=1000, confidence=0.9)
    assert low < 0.0 < high
    assert E.quality_retention(0.45, 0.5) == pytest.approx(0.9)
    assert E.quality_retention(0.3, 0.0) is None


# --------------------------------------------------------------------------- protocol
def test_generation_config_ignores_the_models_own_search_settings():
    model = type("M", (), {})()
    model.generation_config = GenerationConfig(
        num_beams=4,
        length_penalty=2.0,
        no_repeat_ngram_size=3,
        min_length=56,
        max_length=142,
        decoder_start_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
        forced_bos_token_id=0,
    )
    cfg = EvaluationConfig(num_beams=1, max_new_tokens=20, min_new_tokens=2)
    g = E.generation_config_for(model, cfg)
    assert (g.num_beams, g.length_penalty, g.no_repeat_ngram_size) == (1, 1.0, 0)
    assert (g.max_new_tokens, g.min_new_tokens) == (20, 2)
    assert (g.decoder_start_token_id, g.eos_token_id, g.pad_token_id, g.forced_bos_token_id) == (
        2,
        2,
        1,
        0,
    )
    fixed = E.generation_config_for(model, cfg, fixed_new_tokens=7)
    assert fixed.max_new_tokens == fixed.min_new_tokens == 7


def test_run_generate_is_immune_to_the_models_generation_config(tmp_path):
    """generate() fills unset fields from model.generation_config; the protocol must not leak."""
    d = save_tiny_t5(tmp_path / "m")
    model, tok = (
        AutoModelForSeq2SeqLM.from_pretrained(str(d)).eval(),
        AutoTokenizer.from_pretrained(str(d)),
    )
    batch = dict(tok([ROWS[0]["source"]], return_tensors="pt"))
    cfg = E.generation_config_for(model, EvaluationConfig(max_new_tokens=6))
    clean = E.run_generate(model, batch, cfg)
    first = int(clean[0, 1])
    model.generation_config.bad_words_ids = [[first]]  # as a hub config could ship
    model.generation_config.min_length = 6
    with torch.inference_mode():  # the naive call lets them leak in (this is what we guard against)
        leaked = model.generate(**batch, generation_config=cfg, cache=E.fresh_cache())
    assert int(leaked[0, 1]) != first
    assert torch.equal(E.run_generate(model, batch, cfg), clean)
    assert model.generation_config.bad_words_ids == [[first]]  # the model's own config is restored


def test_generated_lengths_stop_at_eos():
    seqs = torch.tensor([[0, 5, 6, 1, 0, 0], [0, 5, 0, 6, 7, 8], [0, 1, 0, 0, 0, 0]])
    assert E.generated_lengths(seqs, 1) == [3, 5, 1]  # a mid-sequence pad id (0) still counts
    assert E.generated_lengths(seqs, [1, 8]) == [3, 5, 1]


def test_generate_decoder_deeper_than_encoder(tmp_path):
    """T5 sizes its default cache by the encoder depth; our fresh cache must cope."""
    d = save_tiny_t5(tmp_path / "m", enc=1, dec=3)
    model, tok = (
        AutoModelForSeq2SeqLM.from_pretrained(str(d)).eval(),
        AutoTokenizer.from_pretrained(str(d)),
    )
    cfg = EvaluationConfig(max_new_tokens=5, batch_size=2, num_beams=2)
    preds = E.generate(model, tok, [r["source"] for r in ROWS], cfg)
    assert len(preds) == len(ROWS) and all(isinstance(p, str) for p in preds)


# --------------------------------------------------------------------------- evaluate_model
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {
        "teacher": save_tiny_t5(root / "teacher", dec=2, seed=0),
        "student": save_tiny_t5(root / "student", dec=1, seed=1),
        "splits": write_splits(root / "splits"),
        "root": root,
    }


CFG = EvaluationConfig(max_new_tokens=6, batch_size=2, bootstrap_samples=100, predictions_sample=3)


def test_evaluate_model_writes_consistent_files(setup):
    out = setup["root"] / "t_eval"
    m = E.evaluate_model(
        setup["teacher"], setup["splits"], CFG, out, device="cpu", source_prefix="summarize: "
    )
    assert m["num_examples"] == len(ROWS)
    assert {
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "gen_len_tokens",
        "gen_len_words",
        "exact_match",
    } <= set(m)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == m and saved["protocol"]["source_prefix"] == "summarize: "
    assert saved["protocol"]["max_new_tokens"] == 6
    per = [json.loads(line) for line in (out / "per_example.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in per] == [r["target"] for r in ROWS]
    assert m["rougeL"] == pytest.approx(sum(p["rougeL"] for p in per) / len(per))
    assert all(1 <= p["gen_len_tokens"] <= 6 for p in per)
    with open(out / "predictions_sample.csv", newline="", encoding="utf-8") as f:
        sample = list(csv.DictReader(f))
    assert len(sample) == 3 and list(sample[0]) == ["source", "reference", "prediction", "rougeL"]
    assert (
        sample[0]["source"] == ROWS[0]["source"] and sample[0]["prediction"] == per[0]["prediction"]
    )
    # the same predictions as plain generate() with the prefix
    model, tok = (
        AutoModelForSeq2SeqLM.from_pretrained(str(setup["teacher"])),
        AutoTokenizer.from_pretrained(str(setup["teacher"])),
    )
    assert E.generate(model, tok, ["summarize: " + r["source"] for r in ROWS], CFG) == [
        p["prediction"] for p in per
    ]


def test_teacher_comparison(setup):
    t_out = setup["root"] / "t_cmp"
    E.evaluate_model(setup["teacher"], setup["splits"], CFG, t_out, device="cpu")
    self_cmp = E.evaluate_model(
        setup["teacher"],
        setup["splits"],
        CFG,
        setup["root"] / "self",
        teacher_eval_dir=t_out,
        device="cpu",
    )
    assert (self_cmp["rougeL_delta_ci_low"], self_cmp["rougeL_delta_ci_high"]) == (0.0, 0.0)
    assert self_cmp["rougeL_delta"] == 0.0
    assert self_cmp["rougeL_retention"] in (1.0, None)  # None only if the random teacher scores 0
    s = E.evaluate_model(
        setup["student"],
        setup["splits"],
        CFG,
        setup["root"] / "s",
        teacher_eval_dir=t_out,
        device="cpu",
    )
    assert s["teacher_rougeL"] == pytest.approx(self_cmp["rougeL"])
    assert s["rougeL_delta"] == pytest.approx(s["rougeL"] - s["teacher_rougeL"])
    assert s["rougeL_delta_ci_low"] <= s["rougeL_delta_ci_high"]


def test_teacher_comparison_refuses_other_examples_or_protocol(setup):
    t_out = setup["root"] / "t_small"
    E.evaluate_model(
        setup["teacher"],
        setup["splits"],
        CFG.model_copy(update={"num_examples": 3}),
        t_out,
        device="cpu",
    )
    with pytest.raises(DataError, match="has 3 examples"):
        E.evaluate_model(
            setup["student"],
            setup["splits"],
            CFG,
            setup["root"] / "x",
            teacher_eval_dir=t_out,
            device="cpu",
        )
    with pytest.raises(DataError, match="decoding protocol"):
        E.evaluate_model(
            setup["student"],
            setup["splits"],
            CFG.model_copy(update={"num_beams": 2}),
            setup["root"] / "y",
            teacher_eval_dir=t_out,
            device="cpu",
        )
    assert not (setup["root"] / "x").exists()  # nothing half-written
