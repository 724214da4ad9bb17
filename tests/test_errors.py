"""One error hierarchy: ConfigError is a NashError, the CLI reports it once, never re-wrapped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nash_core.config import ConfigError, check_decoder_layers, load_config
from nash_core.errors import NashError

REPO = Path(__file__).resolve().parents[1]
DEPTH = "pruning.arms.0.decoder_layers: keeps 3 decoder layers but the base model has 2"


def _config(tmp_path: Path) -> Path:
    """A config whose only arm keeps 3 decoder layers of a local 2-layer base model."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps({"model_type": "t5", "num_layers": 2, "num_decoder_layers": 2})
    )
    raw = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    raw["model"] = {"base": str(base)}
    raw["pruning"]["arms"] = [{"method": "sft", "decoder_layers": 3}]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_config_error_is_a_nash_error_and_a_value_error():
    exc = ConfigError("c.yaml", ["a: bad", "b: worse"])
    assert isinstance(exc, NashError) and isinstance(exc, ValueError)
    assert str(exc) == "invalid config c.yaml: 2 problem(s)\n  - a: bad\n  - b: worse"
    assert exc.problems == ["a: bad", "b: worse"] and exc.source == "c.yaml"


def test_depth_check_message(tmp_path):
    cfg = load_config(_config(tmp_path))
    with pytest.raises(ConfigError) as info:
        check_decoder_layers(cfg, 2)
    assert str(info.value) == f"invalid config config: 1 problem(s)\n  - {DEPTH}"


def test_cli_reports_a_depth_problem_once(tmp_path, capsys):
    from nash_cli.main import main

    assert main(["validate", str(_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err == f"nash: error: invalid config config: 1 problem(s)\n  - {DEPTH}\n"
    assert err.count("invalid config") == 1
