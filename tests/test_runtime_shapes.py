"""benchmarks/runtime_table.py's models at a narrow width: a stand-in with the t5-base
vocabulary (an embedding of 32,128 rows, a tokenizer of ~4,100 tokens, as t5-base's own 32,100
tokens sit under 32,128 rows) and its NASH export (k=3, encoder sparsity 0.3, a real
``modeling_nash`` export) both convert to CTranslate2 with float32 log-probabilities within 1e-4
of PyTorch's, and the fixed-length engines the table times run and generate exactly 32 tokens."""

import json
import sys

import pytest
from sweep_tiny import REPO

pytest.importorskip("ctranslate2")
sys.path.insert(0, str(REPO / "benchmarks"))

import runtime_table as rt  # noqa: E402

from nash_core.export import load_exported  # noqa: E402
from nash_core.standin import write_standin  # noqa: E402

NARROW = dict(d_model=64, d_ff=128, num_heads=4, d_kv=16)


def test_standin_and_nash_export_convert_within_1e_4(tmp_path):
    write_standin(
        "t5-base",
        tmp_path / "standins" / "t5-base",
        encoder_layers=4,
        decoder_layers=4,
        num_dialogues=200,
        overrides=NARROW,
    )
    models = rt.build_models("t5-base", tmp_path / "standins", tmp_path / "work")
    nash = json.loads((models["nash"] / "config.json").read_text())["nash"]
    assert len(nash["shapes"]["decoder"]) == 3
    assert [len(layer["self"]) for layer in nash["shapes"]["encoder"]] == [3, 3, 3, 3]

    dirs = rt.convert_all(models, tmp_path / "work")
    teacher, tok = load_exported(models["teacher"])
    assert teacher.get_input_embeddings().num_embeddings == 32128 > len(tok)
    for (name, q), d in dirs.items():
        meta = json.loads((d / "nash_runtime.json").read_text())
        assert meta["quantization"] == q and meta["check_max_abs_logprob_diff"] <= 1e-4, name

    src = rt.sources(tok, 2)
    assert all(len(r) == rt.SOURCE_LEN and r[-1] == tok.eos_token_id for r in src)
    for name, d in models.items():
        model, _ = load_exported(d)
        assert rt.logprob_check(model, dirs[(name, "float32")], src[0]) <= 1e-4, name

    torch_models = {name: load_exported(d)[0] for name, d in models.items()}
    engines = rt.Engines(models, torch_models, dirs, tok, threads=1)
    assert {e for _, e in engines.calls} == {"pytorch-fp32", "pytorch-int8", "ct2-fp32", "ct2-int8"}
    for key, call in engines.calls.items():
        assert call(src[:2]) == [rt.NEW_TOKENS] * 2, key
    times = rt.time_cells(engines, {1: src[:1]}, rounds=1)
    assert len(times) == 8 and all(len(v) == 1 for v in times.values())
