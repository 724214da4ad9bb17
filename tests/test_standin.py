"""The real-vocabulary path, cheaply: t5-base's width and 32,128-row vocabulary with 2 + 2 layers,
a SentencePiece-style tokenizer with the recipe's ``summarize: `` prefix, one optimizer step of
each training step (teacher, stage, fine-tune) of the real recipe, materialisation, export, and a
fresh-process load with plain transformers that generates the same tokens as the masked model."""

import json
from pathlib import Path

import pruning_tiny as pt
import torch
from transformers import MT5Config, MT5ForConditionalGeneration

from nash_core.base_model import prepare_base
from nash_core.config import load_config
from nash_core.data import prepare_splits, read_split, tokenize_split
from nash_core.export import load_exported, save_exported
from nash_core.launch import run_step
from nash_core.layer_selection import keep_decoder_layers
from nash_core.masks import MaskSet, plan_groups
from nash_core.materialize import materialize_masks
from nash_core.prune import materialize_stage
from nash_core.standin import (
    force_stage_sparsity,
    fresh_process_generate,
    generate_tokens,
    masked_model,
    write_standin,
)

REPO = Path(__file__).resolve().parent.parent
ONE_STEP = {"max_steps": 1, "epochs": None, "batch_size": 2, "eval_every": 1, "eval_examples": 2}


def _overrides(base: Path) -> list[str]:
    train = "{" + ", ".join(f"{k}: {'null' if v is None else v}" for k, v in ONE_STEP.items())
    train += ", warmup_steps: 0, checkpoint_every: 1000}"
    return [
        f"model.base={base}",
        "data.kind=demo",
        "data.demo.num_dialogues=200",
        "data.max_source_length=64",
        "data.max_target_length=24",
        "data.max_samples={train: 8, validation: 4, test: 4}",
        f"teacher.train={train}",
        f"pruning.stage.train={train}",
        f"finetune.train={train}",
        "pruning.arms=[{method: nash, decoder_layers: 1, targets: [0.3]}]",
    ]


def test_t5_base_width_and_vocabulary_end_to_end(tmp_path):
    base = write_standin(
        "t5-base", tmp_path / "base", encoder_layers=2, decoder_layers=2, num_dialogues=400
    )
    config = json.loads((base / "config.json").read_text())
    assert (config["d_model"], config["d_ff"], config["num_heads"]) == (768, 3072, 12)
    assert config["vocab_size"] == 32128 and config["nash_standin"]["shape"] == "t5-base"

    cfg = load_config(REPO / "configs" / "samsum-t5-base.yaml", _overrides(base))
    assert cfg.data.source_prefix == "summarize: "
    splits = prepare_splits(cfg.data, tmp_path / "data")
    info = prepare_base(cfg.model, splits, tmp_path / "models", data_cfg=cfg.data)
    assert info.model_type == "t5" and info.num_decoder_layers == 2

    # the SentencePiece-style tokenizer: "▁" pieces, </s> appended, T5's sentinels on top
    _, tok = load_exported(base)
    ids = tok("summarize: Anna: see you at 5?").input_ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[0].startswith("▁") and pieces[-1] == "</s>" and "<unk>" not in pieces
    assert tok.decode(ids, skip_special_tokens=True) == "summarize: Anna: see you at 5?"
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    row = tokenize_split(splits, "train", tok, cfg.data)[0]
    prefix = tok("summarize:", add_special_tokens=False).input_ids
    assert row["input_ids"][: len(prefix)] == prefix

    teacher = run_step(
        "teacher",
        cfg,
        {"splits_dir": str(splits), "base_info": info.to_dict(), "out_dir": str(tmp_path / "t")},
    )
    common = {"splits_dir": str(splits), "teacher_dir": str(teacher)}
    stage = run_step(
        "stage",
        cfg,
        {
            **common,
            "init_dir": None,
            "arm_index": 0,
            "prev_target": 0.0,
            "target": 0.3,
            "out_dir": str(tmp_path / "stage"),
        },
    )
    force_stage_sparsity(stage, 0.3)
    texts = [r["source"] for r in read_split(splits, "test", limit=2)]
    texts = [cfg.data.source_prefix + t for t in texts]
    model, tok = masked_model(stage)
    expected = generate_tokens(model, tok, texts)

    export = materialize_stage(stage, tmp_path / "export")
    nash = json.loads((export / "config.json").read_text())["nash"]
    assert abs(nash["encoder_sparsity"] - 0.3) < 0.02 and nash["decoder_layers_kept"] == [0]
    fresh = fresh_process_generate(export, texts)
    assert fresh["class"] == "NashT5ForConditionalGeneration"
    assert fresh["tokens"] == expected

    tuned = run_step(
        "finetune",
        cfg,
        {**common, "export_dir": str(export), "arm_index": 0, "out_dir": str(tmp_path / "ft")},
    )
    model, tok = load_exported(tuned)
    assert model.get_input_embeddings().weight.shape == (32128, 768)
    assert fresh_process_generate(tuned, texts)["tokens"] == generate_tokens(model, tok, texts)


def test_mt5_export_loads_and_generates_in_a_fresh_process(tmp_path):
    """An mT5 export carries an MT5Config (no ``scale_decoder_outputs``): the exported class
    must still generate, in process and with plain transformers, like the masked model."""
    torch.manual_seed(0)
    config = MT5Config(
        vocab_size=len(pt.VOCAB),
        d_model=32,
        d_ff=48,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        num_decoder_layers=3,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        relative_attention_num_buckets=8,
    )
    model = MT5ForConditionalGeneration(config).eval()
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))  # untied
    keep_decoder_layers(model, [0, 2])
    masks = MaskSet(plan_groups(model, stacks=("encoder",))).attach(model)
    pt.randomize_masks(masks, seed=4)
    tok, texts = pt.tokenizer(), ["a b c d", "c d e"]
    expected = generate_tokens(model, tok, texts)
    out = save_exported(
        materialize_masks(model, masks), tok, tmp_path / "mt5", {"method": "nash", "target": 0.3}
    )
    assert json.loads((out / "config.json").read_text())["model_type"] == "mt5"
    ours, _ = load_exported(out)
    assert generate_tokens(ours, tok, texts) == expected
    assert fresh_process_generate(out, texts)["tokens"] == expected


def test_disk_estimate_counts_untied_heads(tmp_path):
    """The pre-check's model size equals the real parameter counts of the four hub models
    (meta device: no memory), untied LM heads (Flan-T5, mT5) included."""
    from transformers import AutoConfig

    from nash_core.standin import standin_config
    from tasks.preflight import fp32_model_bytes, untied_head

    real = {  # parameters of the hub checkpoints
        "t5-base": 222_903_552,
        "flan-t5-base": 247_577_856,
        "mt5-base": 582_401_280,
        "bart-base": 139_420_416,
    }
    for shape, params in real.items():
        standin_config(shape).save_pretrained(tmp_path / shape)
        config = AutoConfig.from_pretrained(tmp_path / shape)  # as read from a hub config.json
        assert fp32_model_bytes(config) == 4 * params, shape
    base = write_standin(
        "flan-t5-base", tmp_path / "flan", encoder_layers=1, decoder_layers=1, num_dialogues=200
    )
    assert untied_head(AutoConfig.from_pretrained(base), base)  # read from the safetensors
