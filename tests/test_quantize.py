"""int8 dynamic quantisation saved as a marker dir (no pickles) and re-applied at load time."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from measure_tiny import ROWS, save_tiny_t5, write_splits
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from nash_cli.main import main as nash_main
from nash_core import quantize as Q
from nash_core.config import EvaluationConfig
from nash_core.errors import ModelError
from nash_core.evaluate import evaluate_model
from nash_core.loading import load_seq2seq


def _logits(model, tok):
    batch = tok([ROWS[0]["source"]], return_tensors="pt")
    dec = torch.zeros((1, 3), dtype=torch.long)
    with torch.inference_mode():
        return model(**batch, decoder_input_ids=dec).logits


def test_quantize_dir_roundtrip_is_int8_close_and_pickle_free(tmp_path):
    src = save_tiny_t5(tmp_path / "m", d_model=64)
    qdir = Q.quantize_dir(src, tmp_path / "m-int8")
    assert sorted(p.name for p in qdir.iterdir()) == [Q.MARKER]  # no weights, no pickle
    assert Q.is_quantized_dir(qdir) and not Q.is_quantized_dir(src)
    qmodel, tok = Q.load_quantized(qdir)
    linears = [m for m in qmodel.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert len(linears) > 0 and not any(isinstance(m, torch.nn.Linear) for m in qmodel.modules())
    ref, _ = load_seq2seq(src)
    a, b = _logits(ref, tok), _logits(qmodel, tok)
    assert not torch.equal(a, b)
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    # deterministic: loading twice gives the same model
    assert torch.equal(_logits(Q.load_quantized(qdir)[0], tok), b)


def test_quantized_dir_is_evaluated_and_benchmarked_like_the_others(tmp_path):
    src = save_tiny_t5(tmp_path / "m")
    qdir = Q.quantize_dir(src, tmp_path / "m-int8")
    splits = write_splits(tmp_path / "splits")
    cfg = EvaluationConfig(max_new_tokens=4, bootstrap_samples=20)
    m = evaluate_model(qdir, splits, cfg, tmp_path / "ev", device="cpu")
    assert m["num_examples"] == len(ROWS)
    out = tmp_path / "b.json"
    assert (
        nash_main(
            [
                "benchmark",
                str(src),
                str(qdir),
                "--device",
                "cpu",
                "--batch-sizes",
                "1",
                "--new-tokens",
                "3",
                "--max-new-tokens",
                "3",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--source-length",
                "6",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["models"][1]["weights_mb"] < res["models"][0]["weights_mb"]


def test_moved_together_still_loads_and_a_changed_source_is_refused(tmp_path):
    src = save_tiny_t5(tmp_path / "a" / "m")
    Q.quantize_dir(src, tmp_path / "a" / "m-int8")
    shutil.move(tmp_path / "a", tmp_path / "b")  # relative path still valid, absolute one is not
    qdir = tmp_path / "b" / "m-int8"
    Q.load_quantized(qdir)
    cfg = json.loads((tmp_path / "b" / "m" / "config.json").read_text())
    cfg["dropout_rate"] = 0.5
    (tmp_path / "b" / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="has changed"):
        Q.load_quantized(qdir)
    shutil.rmtree(tmp_path / "b" / "m")
    with pytest.raises(ModelError, match="is gone"):
        Q.load_quantized(qdir)


def test_quantized_refuses_cuda_and_low_precision(tmp_path):
    qdir = Q.quantize_dir(save_tiny_t5(tmp_path / "m"), tmp_path / "q")
    with pytest.raises(ModelError, match="CPU"):
        Q.load_for_measurement(qdir, device="cuda")
    with pytest.raises(ModelError, match="float32"):
        Q.load_for_measurement(qdir, dtype=torch.bfloat16)
    assert Q.default_device([qdir]).type == "cpu"  # even where CUDA exists
    with pytest.raises(ModelError, match="no config.json"):
        Q.quantize_dir(tmp_path / "nothing", tmp_path / "q2")
