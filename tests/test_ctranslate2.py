"""The CTranslate2 runtime: pruned exports convert exactly (heads padded back at their original
indices, removed sub-layers as zero projections), generate the same greedy tokens as PyTorch,
and what cannot be expressed is refused with a clear message and nothing left behind."""

import pruning_tiny as pt
import pytest
import torch

from nash_core.config import EvaluationConfig
from nash_core.errors import NashError
from nash_core.evaluate import _generate_batches, generate
from nash_core.export import load_exported, save_exported
from nash_core.layer_selection import keep_decoder_layers
from nash_core.masks import MaskSet, plan_groups
from nash_core.materialize import materialize_masks
from nash_core.runtimes import NotExpressible, get_runtime, runtime_names
from nash_core.runtimes import ct2 as ct2_runtime
from nash_core.runtimes.ct2 import CT2Generator, convert, convert_model, torch_log_probs

pytest.importorskip("ctranslate2")

WORDS = pt.WORDS
GREEDY = EvaluationConfig(num_beams=1, max_new_tokens=8, min_new_tokens=3, batch_size=3)


def _untied_gated():
    model = pt.t5(gated=True)  # T5 v1.1: gated-gelu, no output scaling, head untied by hand
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    return model


#: family -> (tiny model, mask shift: how much survives pruning while greedy still emits words)
FAMILIES = {"t5": (pt.t5, 0.5), "t5-v1.1": (_untied_gated, 1.5), "bart": (pt.bart, 0.5)}


def _sentences(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [
        " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (6,), generator=g))
        for _ in range(n)
    ]


def _train_copy(model, tok, steps: int = 60) -> None:
    """A few steps of "repeat the first four words" so greedy decoding emits real tokens."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(steps):
        src = _sentences(16, seed=step)
        enc = tok(src, return_tensors="pt", padding=True)
        labels = tok(
            [" ".join(s.split()[:4]) + " </s>" for s in src], return_tensors="pt"
        ).input_ids
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _pruned_trained(make, shift: float):
    """A trained tiny model, decoder cut to layers [1, 2], heads / units / sub-layers pruned."""
    model, tok = make(), pt.tokenizer()
    _train_copy(model, tok)
    keep_decoder_layers(model, [1, 2])
    masks = MaskSet(
        plan_groups(model, stacks=("encoder", "decoder"), sublayers=True, cross=True)
    ).attach(model)
    pt.randomize_masks(masks, seed=4, shift=shift)
    return materialize_masks(model.eval(), masks), tok


@pytest.fixture(scope="module", params=list(FAMILIES))
def converted(request, tmp_path_factory):
    """(PyTorch model as exported, tokenizer, CT2 fp32 dir, CT2 int8 dir)."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    model, tok = _pruned_trained(*FAMILIES[name])
    shapes = model.config.nash["shapes"]
    heads = [layer["self"] for layer in shapes["encoder"]]
    assert any(h is not None and len(h) < 4 for h in heads), "no head pruned: padding untested"
    assert any(sub is None for layer in shapes["decoder"] for sub in layer.values()), (
        "no sub-layer removed"
    )
    if name == "t5-v1.1":  # an untied head cannot round-trip through transformers 5's T5Config
        fp32 = convert_model(model, tok, tmp / "fp32", "float32")
        int8 = convert_model(model, tok, tmp / "int8", "int8")
        return model, tok, fp32, int8
    export = save_exported(model, tok, tmp / "export", {"method": "nash"})
    reloaded, tok = load_exported(export)
    return reloaded, tok, convert(export, tmp / "fp32", "float32"), convert(export, tmp / "int8")


def test_fp32_log_probs_match_the_pytorch_export(converted):
    model, tok, fp32, _ = converted
    gen = CT2Generator(fp32)
    assert gen.meta["padded"] is True and gen.meta["check_max_abs_logprob_diff"] < 1e-4
    for sentence, target in zip(_sentences(4, seed=99), _sentences(4, seed=98)):
        src, tgt = tok(sentence).input_ids, tok(target).input_ids
        ref = torch_log_probs(model, src, tgt)
        got = gen.log_probs(src, tgt)
        assert len(got) == len(ref) == len(tgt) + 1
        assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-4


def test_fp32_greedy_tokens_match_pytorch(converted):
    model, tok, fp32, _ = converted
    sources = _sentences(7, seed=123)
    batches = list(_generate_batches(model, tok, sources, GREEDY, torch.device("cpu"), None))
    expected = [t for texts, _ in batches for t in texts]
    texts, lengths = CT2Generator(fp32).generate_with_lengths(sources, GREEDY)
    assert texts == expected
    assert lengths == [n for _, lens in batches for n in lens]  # new tokens, EOS counted
    assert sum(len(t.split()) for t in texts) >= len(sources)  # real words, not only pad / EOS
    assert all(1 <= n <= GREEDY.max_new_tokens for n in lengths)


def test_beam_search_matches_pytorch(converted):
    """Beams and length penalty map onto CTranslate2's own options: same texts.

    (``no_repeat_ngram_size`` is passed too but its blocking differs from transformers' on these
    degenerate tiny models; docs/serving-runtimes.md reports how often texts agree.)"""
    model, tok, fp32, _ = converted
    beams = GREEDY.model_copy(update=dict(num_beams=3, length_penalty=0.6))
    sources = _sentences(8, seed=321)
    expected = generate(model, tok, sources, beams, device="cpu")
    assert CT2Generator(fp32).generate(sources, beams) == expected


def test_loading_a_ct2_model_leaves_torch_threads_alone(converted):
    """CTranslate2 and torch share one OpenMP runtime: a Translator built with one thread must
    not leave the PyTorch models timed after it in the same thread on one thread too."""
    _, _, _, int8 = converted
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        CT2Generator(int8, intra_threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_int8_runs_and_stays_close(converted):
    model, tok, _, int8 = converted
    gen = CT2Generator(int8)
    assert gen.meta["quantization"] == "int8"
    texts = gen.generate(_sentences(5, seed=7), GREEDY)
    assert len(texts) == 5
    src, tgt = tok("alice meets bob").input_ids, tok("alice meets").input_ids
    got, ref = gen.log_probs(src, tgt), torch_log_probs(model, src, tgt)
    assert all(lp <= 0 for lp in got) and max(abs(a - b) for a, b in zip(got, ref)) < 0.5


def test_heads_packed_to_the_front_fail_the_check(tmp_path, monkeypatch):
    """Packing kept heads first (what a per-stack head count invites) runs without error in
    CTranslate2 but is wrong; the conversion check must catch it and leave nothing behind."""
    model = materialize_heads_only(pt.t5())

    def packed(heads, head_dim):
        return torch.arange(len(heads) * head_dim)

    monkeypatch.setattr(ct2_runtime, "_head_rows", packed)
    with pytest.raises(NotExpressible, match="not expressible in CTranslate2: .*failed its check"):
        convert_model(model, pt.tokenizer(), tmp_path / "out", "float32")
    assert list(tmp_path.iterdir()) == []


def materialize_heads_only(model):
    masks = MaskSet(plan_groups(model, stacks=("encoder",), sublayers=False)).attach(model)
    pt.randomize_masks(masks, seed=4, shift=1.5)
    return materialize_masks(model.eval(), masks)


def test_cofi_hidden_dimension_is_not_expressible(tmp_path):
    model = pt.bart()
    masks = MaskSet(plan_groups(model, stacks=("encoder",), hidden=True)).attach(model)
    pt.randomize_masks(masks, seed=4)
    model = materialize_masks(model.eval(), masks)
    export = save_exported(model, pt.tokenizer(), tmp_path / "export", {"method": "cofi"})
    with pytest.raises(NotExpressible, match=r"^not expressible in CTranslate2: CoFi pruned"):
        convert(export, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def _tiny_mt5(d_kv: int, decoder_layers: int):
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = MT5Config(
        vocab_size=len(pt.VOCAB),
        d_model=32,
        d_ff=48,
        d_kv=d_kv,
        num_heads=4,
        num_layers=2,
        num_decoder_layers=decoder_layers,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return MT5ForConditionalGeneration(cfg).eval()


def test_plain_mt5_converts_exactly(tmp_path):
    model = _tiny_mt5(d_kv=8, decoder_layers=2)
    model.save_pretrained(tmp_path / "mt5")
    pt.tokenizer().save_pretrained(tmp_path / "mt5")
    out = convert(tmp_path / "mt5", tmp_path / "ct2", "float32")
    gen = CT2Generator(out)
    assert gen.meta["padded"] is False and gen.meta["check_max_abs_logprob_diff"] < 1e-4
    src, tgt = [5, 6, 7, 8, 1], [9, 10, 11]
    assert (
        max(abs(a - b) for a, b in zip(gen.log_probs(src, tgt), torch_log_probs(model, src, tgt)))
        < 1e-4
    )


def test_pruned_mt5_export_converts_exactly(tmp_path):
    # mT5: T5 v1.1's blocks (gated-gelu, untied head) under its own config class; a NASH export
    # with encoder heads and FFN units pruned, two of three decoder layers kept
    model = _tiny_mt5(d_kv=6, decoder_layers=3)
    keep_decoder_layers(model, [0, 2])
    model = materialize_heads_only(model)
    heads = [layer["self"] for layer in model.config.nash["shapes"]["encoder"]]
    assert any(h is not None and len(h) < 4 for h in heads), "no head pruned: padding untested"
    export = save_exported(model, pt.tokenizer(), tmp_path / "export", {"method": "nash"})
    reloaded, tok = load_exported(export)
    gen = CT2Generator(convert(export, tmp_path / "ct2", "float32"))
    assert gen.meta["padded"] is True and gen.meta["check_max_abs_logprob_diff"] < 1e-4
    src, tgt = [5, 6, 7, 8, 1], [9, 10, 11]
    got, want = gen.log_probs(src, tgt), torch_log_probs(reloaded, src, tgt)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    sources = _sentences(4, seed=9)
    assert gen.generate(sources, GREEDY) == generate(reloaded, tok, sources, GREEDY)


def test_bart_with_an_embedding_larger_than_its_tokenizer_converts(tmp_path):
    # CTranslate2's own BART loader refuses a vocabulary shorter than the embedding (the
    # bart-base stand-in's, a BART fine-tuned with a trimmed tokenizer); the rows past the
    # tokenizer get placeholder names and the conversion is exact.
    model = pt.bart()
    model.resize_token_embeddings(len(pt.VOCAB) + 7)
    model.save_pretrained(tmp_path / "bart")
    pt.tokenizer().save_pretrained(tmp_path / "bart")
    out = convert(tmp_path / "bart", tmp_path / "ct2", "float32")
    gen = CT2Generator(out)
    assert gen.meta["check_max_abs_logprob_diff"] < 1e-4
    vocab = (out / "shared_vocabulary.json").read_text()
    assert "<nash_unused_6>" in vocab and "<nash_unused_7>" not in vocab
    src, tgt = [5, 6, 7, 8, 2], [9, 10, 11]
    assert (
        max(abs(a - b) for a, b in zip(gen.log_probs(src, tgt), torch_log_probs(model, src, tgt)))
        < 1e-4
    )


def test_runtimes_are_registered_by_name():
    assert {"pytorch", "ctranslate2"} <= set(runtime_names())
    assert "int8" in get_runtime("ctranslate2").compute_types("cpu")
    with pytest.raises(NashError, match="unknown serving runtime 'onnx'; known: ctranslate2"):
        get_runtime("onnx")


def test_unknown_quantization_and_non_ct2_dir_are_refused(tmp_path):
    with pytest.raises(NashError, match="unknown CTranslate2 quantization 'int4'"):
        convert(tmp_path, tmp_path / "out", "int4")
    with pytest.raises(NashError, match="is not a converted CTranslate2 model"):
        CT2Generator(tmp_path)


def test_a_variant_the_device_cannot_run_is_a_config_error():
    from nash_core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"benchmark.variants: ct2-fp16 cannot run on this"):
        load_config(
            "configs/smoke.yaml", ["experiment.device=cpu", "benchmark.variants=[ct2-fp16]"]
        )
    cfg = load_config(
        "configs/smoke.yaml", ["experiment.device=cpu", "benchmark.variants=[ct2-int8]"]
    )
    assert cfg.benchmark.all_variants == ["ct2-int8"]


def test_an_arm_ctranslate2_cannot_express_is_named_before_training():
    from nash_core.config import load_config
    from nash_core.runtimes import refused_variants
    from tasks.sweep_runs import candidate_specs

    cfg = load_config("configs/smoke.yaml", ["benchmark.variants=[ct2-int8, int8]"])
    cofi = [a.label for a in cfg.pruning.arms if a.method == "cofi"]
    refused = refused_variants(cfg)
    assert set(refused) == {(label, "ct2-int8") for label in cofi}
    assert all(r.startswith("not expressible in CTranslate2: arm") for r in refused.values())
    labels = [s.label for s in candidate_specs(cfg)]
    assert "teacher-ct2-int8" in labels and any(lb.endswith("-int8") for lb in labels)
    assert not any(lb.startswith(tuple(cofi)) and lb.endswith("-ct2-int8") for lb in labels)
