"""Base model: demo tokenizer + T5, local directory checks, fingerprints, load_seq2seq."""

import json

import pytest
import torch
from foundation_tiny import corpus_texts, save_bart, save_t5
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from nash_core.base_model import BaseInfo, build_demo_tokenizer, fingerprint_base, prepare_base
from nash_core.config import DataConfig, ModelConfig
from nash_core.data import prepare_splits
from nash_core.errors import ModelError
from nash_core.loading import load_seq2seq

TINY = dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, encoder_layers=2, decoder_layers=3)


@pytest.fixture(scope="module")
def texts():
    return corpus_texts(200)


def test_demo_tokenizer_roundtrip(tmp_path, texts):
    build_demo_tokenizer(texts, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert 300 < len(tok) < 700
    text = "Anna's dinner moved to friday at 7 pm.  Ben: Great, see you!"
    ids = tok(text)["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert (
        tok.decode(ids, skip_special_tokens=True)
        == "anna's dinner moved to friday at 7 pm. ben: great, see you!"
    )
    unknown = tok("Anna zyzzyva")["input_ids"]
    assert unknown[1] == tok.unk_token_id


def test_demo_base_is_built_once_and_loads(tmp_path):
    data_cfg = DataConfig(kind="demo", demo={"num_dialogues": 150, "seed": 0})
    splits = prepare_splits(data_cfg, tmp_path / "data")
    cfg = ModelConfig(base="demo", demo=TINY)
    info = prepare_base(cfg, splits, tmp_path / "models", data_cfg=data_cfg, seed=1)
    assert isinstance(info, BaseInfo)
    assert (info.model_type, info.num_decoder_layers, info.revision) == ("t5", 3, None)
    assert info.path.endswith(f"base-{info.fingerprint}")
    model, tok = load_seq2seq(info.path)
    assert model.config.decoder_start_token_id == tok.pad_token_id == 0
    assert model.config.vocab_size == len(tok)
    assert len(model.decoder.block) == 3 and model.config.d_model == 32

    mtime = (tmp_path / "models" / f"base-{info.fingerprint}" / "model.safetensors").stat().st_mtime
    again = prepare_base(cfg, splits, tmp_path / "models", data_cfg=data_cfg, seed=1)
    assert again == info
    assert (
        tmp_path / "models" / f"base-{info.fingerprint}" / "model.safetensors"
    ).stat().st_mtime == mtime
    deeper = cfg.model_copy(update={"demo": cfg.demo.model_copy(update={"decoder_layers": 4})})
    assert (
        prepare_base(deeper, splits, tmp_path / "models", data_cfg=data_cfg, seed=1).fingerprint
        != info.fingerprint
    )
    assert (
        fingerprint_base(cfg, info.path, data_cfg=data_cfg, splits_fp=splits.name, seed=2)
        != info.fingerprint
    )


@pytest.mark.parametrize("arch, layers", [("t5", 2), ("bart", 3)])
def test_local_directory(tmp_path, texts, arch, layers):
    path = (save_t5 if arch == "t5" else save_bart)(tmp_path / arch, texts, dec_layers=layers)
    info = prepare_base(ModelConfig(base=str(path)), None, tmp_path / "models")
    assert (info.path, info.model_type, info.num_decoder_layers) == (str(path), arch, layers)
    assert info.fingerprint == fingerprint_base(ModelConfig(base=str(path)), path)
    model, _ = load_seq2seq(path)
    with torch.no_grad():
        model.get_input_embeddings().weight[0, 0] += 1
    model.save_pretrained(path)
    assert fingerprint_base(ModelConfig(base=str(path)), path) != info.fingerprint


def test_unsupported_model_type(tmp_path, texts):
    path = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(path)
    build_demo_tokenizer(texts, path)
    with pytest.raises(
        ModelError, match=r"'gpt2' model; NASH pruning supports \['t5', 'mt5', 'bart'\]"
    ):
        prepare_base(ModelConfig(base=str(path)), None, tmp_path / "models")


def test_broken_local_directories(tmp_path, texts):
    path = save_t5(tmp_path / "t5", texts)
    cfg = ModelConfig(base=str(path))
    weights = path / "model.safetensors"
    blob = weights.read_bytes()

    weights.write_bytes(blob[:-100])
    with pytest.raises(ModelError, match="model.safetensors is corrupted or truncated"):
        prepare_base(cfg, None, tmp_path / "m")
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="corrupted or truncated"):
        prepare_base(cfg, None, tmp_path / "m")
    weights.unlink()
    (path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match=r"no safetensors weights \(\['pytorch_model.bin'\]\)"):
        prepare_base(cfg, None, tmp_path / "m")
    weights.write_bytes(blob)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (path / f).unlink()
    with pytest.raises(ModelError, match="no tokenizer files"):
        prepare_base(cfg, None, tmp_path / "m")
    with pytest.raises(ModelError, match="local directory './missing-dir' does not exist"):
        prepare_base(ModelConfig(base="./missing-dir"), None, tmp_path / "m")


def test_hub_offline_errors_are_clear(tmp_path):
    cfg = ModelConfig(base="google/flan-t5-small")
    with pytest.raises(ModelError, match="cannot read its config"):
        prepare_base(cfg, None, tmp_path)
    with pytest.raises(ModelError, match="cannot resolve revision 'main' to a commit"):
        fingerprint_base(cfg, cfg.base)
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert fingerprint_base(cfg.model_copy(update={"revision": sha}), cfg.base) == sha


def test_tokenizer_larger_than_embeddings_is_refused(tmp_path, texts):
    path = save_t5(tmp_path / "t5", texts)
    config = json.loads((path / "config.json").read_text())
    bigger = build_demo_tokenizer(texts + ["brandnewword " * 3], tmp_path / "other")
    assert len(bigger) > config["vocab_size"]
    bigger.save_pretrained(path)
    with pytest.raises(ModelError, match=r"tokenizer has \d+ tokens but the model embeds only"):
        load_seq2seq(path)
