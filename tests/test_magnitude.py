"""The unstructured arm (``method: magnitude``, nash_core/methods/magnitude.py) on a tiny T5: exact
sparsity, zeros kept through the fine-tune, a plain HF export that reloads in a fresh process
with its zeros; magnitude on top of a NASH export; the schedule and the selection maths."""

import json
import subprocess
import sys

import pytest
import torch
from tiny_t5 import tiny_t5_config
from transformers import T5ForConditionalGeneration

from nash_core import prune
from nash_core.base_model import build_demo_tokenizer
from nash_core.config import (
    ConfigError,
    DataConfig,
    FinetuneConfig,
    PruneStageConfig,
    TrainConfig,
    arm_config,
    validate_config,
)
from nash_core.data import prepare_splits, read_split
from nash_core.loading import load_seq2seq
from nash_core.methods import magnitude
from nash_core.sparsity import zero_stats
from nash_core.steps import FinetuneJob, StageJob

DATA = DataConfig(
    kind="demo",
    demo={"num_dialogues": 100},
    max_source_length=32,
    max_target_length=12,
    max_samples={"train": 48, "validation": 8, "test": 8},
)
FT = FinetuneConfig(
    train=TrainConfig(max_steps=4, batch_size=8, lr=1e-2, eval_every=2, eval_examples=8)
)


def _stage_cfg(steps=8, ramp=4):
    return PruneStageConfig(
        train=TrainConfig(
            max_steps=steps,
            batch_size=8,
            lr=1e-2,  # large, so that AdamW really tries to move the pruned weights
            eval_every=4,
            eval_examples=8,
            checkpoint_every=4,
            log_every=2,
        ),
        target_warmup_steps=ramp,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("magnitude")
    splits = prepare_splits(DATA, root / "splits")
    rows = read_split(splits, "train")
    tok = build_demo_tokenizer(
        [r["source"] + " " + r["target"] for r in rows], root / "tok", vocab_size=300
    )
    torch.manual_seed(0)
    cfg = tiny_t5_config(
        len(tok),
        num_decoder_layers=3,
        dropout_rate=0.0,
        relative_attention_num_buckets=8,
    )
    T5ForConditionalGeneration(cfg).save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root, splits


def _stage(setup, arm, init, prev, target, name, cfg=None):
    root, splits = setup
    job = StageJob(
        teacher_dir=root / "teacher",
        init_dir=init,
        arm=arm,
        stage=cfg or _stage_cfg(),
        prev_target=prev,
        target=target,
        out_dir=root / name,
        splits_dir=splits,
        data=DATA,
    )
    return prune.run_stage(job)


def _weights(model, stacks=("encoder", "decoder")):
    return [m.weight for _, m in magnitude.prunable_linears(model, stacks)]


def test_cubic_schedule_and_exact_selection():
    assert magnitude.cubic_sparsity(0, 0.0, 0.5, 10) == 0.0
    assert magnitude.cubic_sparsity(5, 0.0, 0.5, 10) == pytest.approx(0.5 - 0.5 * 0.5**3)
    assert magnitude.cubic_sparsity(10, 0.0, 0.5, 10) == magnitude.cubic_sparsity(99, 0, 0.5, 10)
    torch.manual_seed(0)
    ws = [torch.randn(7, 5), torch.zeros(3, 4), torch.randn(11, 2)]  # ties at zero
    for scope in ("global", "per_layer"):
        masks = magnitude.magnitude_masks(ws, 0.4, scope)
        if scope == "global":
            total = sum(w.numel() for w in ws)
            assert sum(int((~m).sum()) for m in masks) == round(0.4 * total)
            assert not masks[1].any()  # the zeros go first
        else:
            assert [int((~m).sum()) for m in masks] == [round(0.4 * w.numel()) for w in ws]
    with pytest.raises(ValueError, match="sparsity"):
        magnitude.magnitude_masks(ws, 1.0)


@pytest.mark.parametrize("scope,schedule", [("global", "cubic"), ("per_layer", "one_shot")])
def test_magnitude_arm_exact_sparsity_zeros_kept_and_reloaded_fresh(setup, scope, schedule):
    root, splits = setup
    arm = arm_config(
        dict(
            method="magnitude",
            targets=[0.5],
            magnitude={"scope": scope, "schedule": schedule, "stacks": ["encoder", "decoder"]},
        )
    )
    tag = f"{scope}-{schedule}"
    stage = _stage(setup, arm, None, 0.0, 0.5, f"s-{tag}")
    model, _ = load_seq2seq(stage)
    assert magnitude.zero_fraction(_weights(model)) == pytest.approx(0.5, abs=0.005)
    meta = json.loads((stage / "stage_meta.json").read_text())
    assert meta["on_target"] and meta["best_metrics"]["weight_zero_fraction"] == pytest.approx(
        0.5, abs=0.005
    )
    # the embeddings (tied LM head) are not pruned
    assert float((model.shared.weight == 0).float().mean()) < 0.01

    export = prune.materialize_stage(stage, root / f"e-{tag}")
    nash = json.loads((export / "config.json").read_text())["nash"]
    assert nash["method"] == "magnitude" and "shapes" not in nash
    assert nash["unstructured"]["scope"] == scope
    assert nash["unstructured"]["weight_zero_fraction"] == pytest.approx(0.5, abs=0.005)
    before = [w.clone() == 0 for w in _weights(load_seq2seq(export)[0])]

    final = prune.finetune_export(
        FinetuneJob(
            export_dir=export,
            teacher_dir=root / "teacher",
            finetune=FT,
            out_dir=root / f"f-{tag}",
            splits_dir=splits,
            data=DATA,
        )
    )
    tuned, _ = load_seq2seq(final)
    after = _weights(tuned)
    for zero, w in zip(before, after):
        assert bool((w[zero] == 0).all())  # every pruned weight is still exactly zero
    assert magnitude.zero_fraction(after) == pytest.approx(0.5, abs=0.005)
    stats = zero_stats(final)
    assert stats["weight_zero_fraction"] == pytest.approx(0.5, abs=0.005)
    total = sum(p.numel() for p in tuned.parameters())
    assert stats["params_nonzero"] < total

    # a fresh process, plain transformers, no nash_core and no remote code
    code = (
        "import sys, torch; from transformers import AutoModelForSeq2SeqLM as A\n"
        "m = A.from_pretrained(sys.argv[1])\n"
        "ws = [mod.weight for s in (m.encoder, m.decoder) for mod in s.modules()"
        " if isinstance(mod, torch.nn.Linear)]\n"
        "print(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(final)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(0.5, abs=0.005)


def test_magnitude_on_top_of_a_nash_export(setup):
    root, splits = setup
    nash_arm = arm_config(dict(method="nash", decoder_layers=2, targets=[0.3]))
    nash_stage = PruneStageConfig(
        train=TrainConfig(max_steps=4, batch_size=8, eval_every=2, eval_examples=8),
        mask_lr=0.3,
        lagrangian_lr=0.3,
        target_warmup_steps=2,
        sparsity_epsilon=0.5,
    )
    s = _stage(setup, nash_arm, None, 0.0, 0.3, "nash-s", nash_stage)
    nash_export = prune.materialize_stage(s, root / "nash-e")
    structured = json.loads((nash_export / "config.json").read_text())["nash"]
    arm = arm_config(dict(method="magnitude", from_arm="nash-k2", targets=[0.6]))
    stage = _stage(setup, arm, nash_export, 0.0, 0.6, "nm-s")
    export = prune.materialize_stage(stage, root / "nm-e")
    nash = json.loads((export / "config.json").read_text())["nash"]
    assert nash["shapes"] == structured["shapes"]  # the narrow encoder is kept
    assert nash["encoder_sparsity"] == pytest.approx(structured["encoder_sparsity"])
    assert nash["decoder_layers_kept"] == [0, 2] and nash["method"] == "magnitude"
    model, _ = load_seq2seq(export)
    assert type(model).__name__ == "NashT5ForConditionalGeneration"
    assert magnitude.zero_fraction(_weights(model)) == pytest.approx(0.6, abs=0.005)


def test_bad_magnitude_options_name_the_field():
    import yaml

    raw = yaml.safe_load(open("configs/smoke.yaml"))
    cases = {
        "pruning.arms.0.magnitude.scope": {
            "method": "magnitude",
            "targets": [0.5],
            "magnitude": {"scope": "row"},
        },
        "pruning.arms.0.magnitude.stacks": {
            "method": "magnitude",
            "targets": [0.5],
            "magnitude": {"stacks": ["lm_head"]},
        },
        "from_arm 'nash-k9' is not the label of an earlier arm": {
            "method": "magnitude",
            "targets": [0.5],
            "from_arm": "nash-k9",
        },
        "targets must list at least one": {"method": "magnitude"},
        "pruning.arms.0.magnitude: an option of method 'magnitude', not of 'sft'": {
            "method": "sft",
            "decoder_layers": 1,
            "magnitude": {},
        },
    }
    for needle, arm in cases.items():
        bad = {**raw, "pruning": {**raw["pruning"], "arms": [arm]}}
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
            validate_config(bad)
    bad = {
        **raw,
        "benchmark": {**raw["benchmark"], "variants": ["fp16"]},
        "experiment": {**raw["experiment"], "device": "cpu"},
    }
    with pytest.raises(ConfigError, match="fp16 is served on CUDA only"):
        validate_config(bad)
    bad = {**raw, "benchmark": {**raw["benchmark"], "variants": ["bf16", "bf16"]}}
    with pytest.raises(ConfigError, match="benchmark: .*variants must not repeat"):
        validate_config(bad)
    ok = {**raw, "benchmark": {**raw["benchmark"], "quantize_int8": True, "variants": ["bf16"]}}
    assert validate_config(ok).benchmark.all_variants == ["int8", "bf16"]
