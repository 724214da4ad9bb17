"""Exports reload with plain transformers in a fresh process that cannot import nash_core."""

import json
import subprocess
import sys

import pruning_tiny as pt
import torch

from nash_core.export import load_exported, save_exported
from nash_core.layer_selection import keep_decoder_layers
from nash_core.loading import load_seq2seq
from nash_core.masks import MaskSet, plan_groups
from nash_core.materialize import materialize_masks

GEN = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, suppress_tokens=[0, 1])
FRESH = """
import json, sys
sys.modules["nash_core"] = None  # the export must not need nash_core
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
results = {}
for path, ids, mask in json.loads(sys.argv[1]):
    model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(path)
    out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         max_new_tokens=8, min_new_tokens=8, do_sample=False,
                         suppress_tokens=[0, 1])
    results[path] = {"class": type(model).__name__, "vocab": len(tok), "out": out.tolist()}
print(json.dumps(results))
"""
FAMILIES = {"t5": pt.t5, "t5-gated": lambda: pt.t5(gated=True), "bart": pt.bart}
# name -> (model, CoFi hidden-dimension mask on)
EXPORTS = {
    **{name: (make, False) for name, make in FAMILIES.items()},
    **{f"{name}-hidden": (make, True) for name, make in FAMILIES.items()},
}


def _pruned(make, hidden=False):
    model = make()
    keep_decoder_layers(model, [1, 2])
    masks = MaskSet(
        plan_groups(model, stacks=("encoder", "decoder"), sublayers=True, cross=True, hidden=hidden)
    ).attach(model)
    pt.randomize_masks(masks, seed=4)
    return materialize_masks(model.eval(), masks)


def test_fresh_process_generates_like_load_exported(tmp_path):
    b = pt.batch()
    expected, jobs = {}, []
    for name, (make, hidden) in EXPORTS.items():
        model = _pruned(make, hidden)
        out = save_exported(
            model,
            pt.tokenizer(),
            tmp_path / name,
            {"method": "cofi", "target": 0.3, "teacher": "teacher-dir"},
        )
        config = json.loads((out / "config.json").read_text())
        nash = config["nash"]
        assert (
            nash["decoder_layers_kept"] == [1, 2]
            and nash["method"] == "cofi"
            and nash["target"] == 0.3
        )
        assert nash["encoder_heads_kept"] == [
            layer["self"] or [] for layer in nash["shapes"]["encoder"]
        ]
        assert config["auto_map"]["AutoModelForSeq2SeqLM"].startswith("modeling_nash.Nash")
        assert (out / "modeling_nash.py").is_file() and (out / "model.safetensors").is_file()
        if hidden:  # the residual width shrank; config.d_model stays the teacher's
            kept = nash["shapes"]["hidden"]["kept"]
            assert nash["hidden_dims_kept"] == kept < config["d_model"] == 32
        else:
            assert "hidden" not in nash["shapes"] and "hidden_dims_kept" not in nash
        ours, _ = load_exported(out)
        assert sum(p.numel() for p in ours.parameters()) == sum(
            p.numel() for p in model.parameters()
        )
        assert (
            ours.get_input_embeddings().embedding_dim == model.get_input_embeddings().embedding_dim
        )
        ids = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        expected[str(out)] = ours.generate(**ids, **GEN)
        assert torch.equal(expected[str(out)], model.generate(**ids, **GEN))
        jobs.append([str(out), b["input_ids"].tolist(), b["attention_mask"].tolist()])
    assert not list(tmp_path.glob(".*"))  # atomic writes left nothing temporary behind

    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH, json.dumps(jobs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, want in expected.items():
        assert results[path]["class"].startswith("Nash") and results[path]["vocab"] == len(pt.VOCAB)
        assert results[path]["out"] == want.tolist()


def test_unpruned_shapes_export_is_plain_hf(tmp_path):
    model = pt.bart(dec=3)
    keep_decoder_layers(model, [0, 2])
    out = save_exported(
        model, pt.tokenizer(), tmp_path / "sft", {"method": "sft", "target": None, "teacher": "t"}
    )
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and not (out / "modeling_nash.py").exists()
    assert config["nash"]["decoder_layers_kept"] == [0, 2]
    loaded, tok = load_seq2seq(out)  # the shared loader routes "nash" exports to load_exported
    b = pt.batch()
    with torch.no_grad():
        assert torch.equal(loaded(**b).logits, model(**b).logits)
