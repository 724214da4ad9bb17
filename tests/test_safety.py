"""Safe loading: no pickle code ever runs, no remote code unless asked, YAML stays data, exports
carry only our modeling file, servers bind to localhost, no shell.

A scan of the source (syntax trees, not text, so comments and docstrings do not count) plus
behaviour checks with booby-trapped files: each trap would create a marker file if its code ran.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import pruning_tiny as pt
import pytest
import torch
from foundation_tiny import corpus_texts, save_t5

REPO = Path(__file__).resolve().parent.parent
SOURCES = [
    p
    for d in ("nash_core", "nash_mlflow", "tasks", "flows", "nash_cli", "benchmarks")
    for p in (REPO / d).rglob("*.py")
]


class Trap:
    """Unpickling this calls ``open(marker, "w")``: the file appears if pickle code runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


# --------------------------------------------------------------------------- the source scan
def _name(node: ast.AST) -> str:
    """Dotted name of a call target (``torch.load``, ``subprocess.run``, ``eval``)."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else k.value
    return None


# C901: a flat list of independent AST rules, one branch each.
def violations(tree: ast.AST) -> list[str]:  # noqa: C901
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            bad = [
                n
                for n in names
                if n.split(".")[0]
                in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal")
            ]
            found += [f"line {node.lineno}: imports {n}" for n in bad]
        if isinstance(node, ast.Constant) and node.value == "0.0.0.0":
            found.append(f"line {node.lineno}: binds to 0.0.0.0")
        if not isinstance(node, ast.Call):
            continue
        name, line = _name(node.func), node.lineno
        if name.endswith("torch.load") and _kw(node, "weights_only") is not True:
            found.append(f"line {line}: torch.load without weights_only=True")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"line {line}: {name} (use yaml.safe_load)")
        if name in ("os.system", "os.popen", "eval", "exec", "pickle.load", "pickle.loads"):
            found.append(f"line {line}: {name}")
        if _kw(node, "shell") is True:
            found.append(f"line {line}: shell=True")
        if _kw(node, "trust_remote_code") is True:
            found.append(f"line {line}: trust_remote_code=True")
        if _kw(node, "use_safetensors") is False:
            found.append(f"line {line}: use_safetensors=False")
    return found


def test_the_scan_finds_what_it_forbids():
    code = (
        "import pickle\nimport torch, yaml, os, subprocess\ntorch.load('x')\n"
        "torch.load('x', weights_only=False)\nyaml.load(s)\nos.system('ls')\n"
        "subprocess.run('ls', shell=True)\nM.from_pretrained(p, trust_remote_code=True)\n"
        "serve(host='0.0.0.0')\neval('1')\n"
    )
    assert len(violations(ast.parse(code))) == 9
    assert violations(ast.parse("torch.load(p, weights_only=True)\nyaml.safe_load(s)\n")) == []


def test_source_tree_has_no_unsafe_loading_or_shell():
    assert len(SOURCES) > 30
    problems = {
        str(p.relative_to(REPO)): v
        for p in SOURCES
        if (v := violations(ast.parse(p.read_text(encoding="utf-8"))))
    }
    assert not problems, problems


# --------------------------------------------------------------------------- behaviour
def test_pickled_weights_are_refused_without_running_them(tmp_path):
    from nash_core.base_model import prepare_base
    from nash_core.config import ModelConfig
    from nash_core.errors import ModelError
    from nash_core.loading import load_seq2seq

    base = save_t5(tmp_path / "base", corpus_texts(50))
    (base / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"shared.weight": Trap(marker)}, base / "pytorch_model.bin")  # a pickle
    with pytest.raises(ModelError, match="no safetensors weights"):
        prepare_base(ModelConfig(base=str(base)), None, tmp_path / "models")
    with pytest.raises(ModelError, match="cannot load model"):
        load_seq2seq(base)
    assert not marker.exists()
    torch.load(base / "pytorch_model.bin", weights_only=False)  # the trap is real
    assert marker.exists()


def test_a_poisoned_checkpoint_is_not_unpickled(tmp_path):
    from nash_core.config import TrainConfig
    from nash_core.train import train_seq2seq

    tok, data = pt.tokenizer(), pt.dataset(8)
    cfg = TrainConfig(max_steps=2, batch_size=4, eval_every=100)
    train_seq2seq(pt.t5(), tok, data, data, cfg, tmp_path / "run")  # leaves checkpoint/
    marker = tmp_path / "pwned"
    (tmp_path / "run" / "checkpoint" / "optimizer.pt").write_bytes(
        pickle.dumps(Trap(marker), protocol=2)
    )
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train_seq2seq(pt.t5(), tok, data, data, cfg, tmp_path / "run")  # resumes: loads it
    assert not marker.exists()


def test_config_yaml_cannot_construct_objects(tmp_path):
    from nash_core.config import ConfigError, load_config

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"experiment: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()


def test_remote_code_of_a_base_model_is_not_run_unless_the_config_says_so(tmp_path):
    from nash_core.base_model import prepare_base
    from nash_core.config import ModelConfig
    from nash_core.loading import load_seq2seq

    base = save_t5(tmp_path / "base", corpus_texts(50))
    marker = tmp_path / "pwned"
    (base / "evil.py").write_text(
        f"open({str(marker)!r}, 'w')\nfrom transformers import "
        "T5Config as EvilConfig, T5ForConditionalGeneration as EvilModel\n"
    )
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForSeq2SeqLM": "evil.EvilModel",
    }
    (base / "config.json").write_text(json.dumps(config))

    info = prepare_base(ModelConfig(base=str(base)), None, tmp_path / "models")
    model, _ = load_seq2seq(base)
    assert info.model_type == "t5" and type(model).__name__ == "T5ForConditionalGeneration"
    assert not marker.exists()
    assert ModelConfig(base=str(base)).trust_remote_code is False


def test_exports_carry_only_our_modeling_file(tmp_path):
    from nash_core.export import save_exported
    from nash_core.layer_selection import keep_decoder_layers
    from nash_core.masks import MaskSet, plan_groups
    from nash_core.materialize import materialize_masks

    model = pt.t5()
    keep_decoder_layers(model, [0, 2])
    masks = MaskSet(plan_groups(model, stacks=("encoder",))).attach(model)
    pt.randomize_masks(masks)
    out = save_exported(
        materialize_masks(model.eval(), masks),
        pt.tokenizer(),
        tmp_path / "export",
        {"method": "nash"},
    )
    code = sorted(p.name for p in Path(out).rglob("*") if p.suffix in (".py", ".pyc", ".so"))
    assert code == ["modeling_nash.py"]
    ours = REPO / "nash_core" / "export_modeling" / "modeling_nash.py"
    assert (Path(out) / "modeling_nash.py").read_bytes() == ours.read_bytes()
    auto_map = json.loads((Path(out) / "config.json").read_text())["auto_map"]
    assert auto_map and all(v.startswith("modeling_nash.") for v in auto_map.values())
    assert not list(Path(out).glob("*.bin")) and not list(Path(out).glob("*.pt"))


def test_servers_bind_to_localhost_by_default():
    from nash_cli.main import build_parser

    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    deploy = (REPO / "nash_cli" / "deploy.py").read_text()
    # ruff format may put each argument of the command list on its own line
    assert re.search(r'"--host",\s*"127\.0\.0\.1"', deploy)
