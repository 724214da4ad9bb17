"""The typed config schema, --set overrides and `nash validate` (exit codes and messages)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nash_core.config import ConfigError, NashConfig, apply_overrides, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
# Published decoder depths of the hub models the real recipes name (checked without download).
HUB_DECODER_DEPTH = {
    "google-t5/t5-base": 12,
    "google/flan-t5-base": 12,
    "google/mt5-base": 12,
    "facebook/bart-base": 6,
    "google-t5/t5-small": 6,
}


def nash(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "nash_cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, NashConfig)
    if cfg.model.base in HUB_DECODER_DEPTH:
        depth = HUB_DECODER_DEPTH[cfg.model.base]
        for arm in cfg.pruning.arms:
            assert arm.decoder_layers is None or arm.decoder_layers <= depth
    else:
        assert cfg.model.base == "demo", f"{path.name}: add its base model to HUB_DECODER_DEPTH"


def test_paper_recipe_is_the_paper_setting():
    cfg = load_config(REPO / "configs/samsum-t5-base.yaml")
    nash_arms = [a for a in cfg.pruning.arms if a.method == "nash"]
    assert any(a.decoder_layers == 3 and a.layer_selection == "uniform" for a in nash_arms)
    assert max(max(a.targets) for a in nash_arms) == pytest.approx(0.3)
    from nash_core.layer_selection import select_layers

    assert select_layers(12, 3, "uniform") == [0, 5, 11]


def test_overrides_are_parsed_as_yaml_and_validated():
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        ["pruning.arms.0.targets=[0.1,0.4]", "evaluation.num_beams=3", "experiment.name=other"],
    )
    assert cfg.pruning.arms[0].targets == [0.1, 0.4]
    assert cfg.evaluation.num_beams == 3 and cfg.experiment.name == "other"
    with pytest.raises(ConfigError, match="evaluation.num_beams"):
        load_config(REPO / "configs/smoke.yaml", ["evaluation.num_beams=zero"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(REPO / "configs/smoke.yaml", ["evaluation.num_beams"])


def test_apply_overrides_creates_sections_and_leaves_input_alone():
    raw = {"a": {"b": 1}, "l": [{"x": 1}]}
    out = apply_overrides(raw, ["a.c.d=2", "l.0.x=5"])
    assert out == {"a": {"b": 1, "c": {"d": 2}}, "l": [{"x": 5}]}
    assert raw == {"a": {"b": 1}, "l": [{"x": 1}]}


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("foo=1", "foo: unknown key"),
        ("evaluation.num_beam=4", "evaluation.num_beam: unknown key"),
        ("evaluation.batch_size=many", "evaluation.batch_size"),
        ("pruning.arms.0.targets=[1.5]", "pruning.arms.0.targets: sparsity target 1.5"),
        ("pruning.arms.0.targets=[-0.1]", "outside [0, 1)"),
        ("pruning.arms.0.targets=[0.3,0.2]", "strictly increasing"),
        ("pruning.arms.0.decoder_layers=0", "pruning.arms.0.decoder_layers"),
        ("pruning.arms.0.decoder_layers=7", "keeps 7 decoder layers but the base model has 4"),
        ("pruning.arms=[]", "arms is empty"),
        ("selection.batch_size=2", "selection.batch_size 2 is not in benchmark.batch_sizes"),
        # arms: one config class per method (a union discriminated by `method`)
        ("pruning.arms.3.decoder_layers=2", "pruning.arms.3.decoder_layers: an option of method"),
        ("pruning.arms.0.hidden=true", "pruning.arms.0.hidden: an option of method 'cofi', not"),
        ("pruning.arms.0.method=prune", "pruning.arms.0.method: unknown method 'prune'; one of"),
        ("pruning.arms.0={targets: [0.3]}", "pruning.arms.0.method: missing; one of nash"),
        ("pruning.arms.0={method: nash}", "pruning.arms.0.decoder_layers: required for method"),
        ("pruning.arms.3.typo=1", "pruning.arms.3.typo: unknown key for method 'cofi' (its"),
    ],
)
def test_bad_values_name_the_field(override, culprit):
    with pytest.raises(ConfigError) as exc:
        load_config(REPO / "configs/smoke.yaml", [override])
    assert culprit in str(exc.value)


def test_missing_column_mapping_is_reported(tmp_path):
    raw = yaml.safe_load((REPO / "configs/samsum-t5-base.yaml").read_text())
    del raw["data"]["target_column"]
    with pytest.raises(ConfigError, match="missing dataset column mapping: set data.target_column"):
        from nash_core.config import validate_config

        validate_config(raw)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as exc:
        load_config(
            REPO / "configs/smoke.yaml",
            ["foo=1", "pruning.arms.0.targets=[1.5]", "pruning.arms.1.decoder_layers=9"],
        )
    assert len(exc.value.problems) == 3


def test_cli_validate_exit_codes(tmp_path):
    ok = nash("validate", "configs/smoke.yaml")
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    raw["pruning"]["arms"][0]["targets"] = [1.5]
    raw["pruning"]["arms"][1]["decoder_layers"] = 9
    raw["typo_section"] = {}
    bad.write_text(yaml.safe_dump(raw))
    res = nash("validate", bad)
    assert res.returncode == 2
    for culprit in ("typo_section", "pruning.arms.0.targets", "pruning.arms.1.decoder_layers"):
        assert culprit in res.stderr
    assert "Traceback" not in res.stderr
    missing = nash("validate", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "file not found" in missing.stderr
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("experiment: [unclosed\n")
    assert nash("validate", notyaml).returncode == 2


def test_cli_run_with_bad_config_does_no_work(tmp_path):
    workdir = tmp_path / "work"
    res = nash(
        "run", "configs/smoke.yaml", "--set", "pruning.arms.0.targets=[1.5]", "--workdir", workdir
    )
    assert res.returncode == 2 and "pruning.arms.0.targets" in res.stderr
    assert not workdir.exists(), "a rejected config must not create a workdir or a run"


def test_cli_local_files_must_exist(tmp_path):
    raw = yaml.safe_load((REPO / "configs/samsum-t5-base.yaml").read_text())
    raw["data"] = {
        "kind": "local",
        "files": {"train": str(tmp_path / "missing.jsonl")},
        "source_column": "dialogue",
        "target_column": "summary",
    }
    cfg_path = tmp_path / "local.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    res = nash("validate", cfg_path)
    assert res.returncode == 2 and "data.files.train: file not found" in res.stderr


def test_arm_step_counts_override_the_shared_training_sections():
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        ["pruning.arms.3.stage_steps=7", "pruning.arms.3.finetune_steps=3"],
    )
    shared_stage, shared_ft = cfg.pruning.stage.train.max_steps, cfg.finetune.train.max_steps
    assert (cfg.stage_config(3).train.max_steps, cfg.finetune_config(3).train.max_steps) == (7, 3)
    # the other arms and the shared sections are untouched
    assert cfg.stage_config(0) is cfg.pruning.stage and cfg.finetune_config(0) is cfg.finetune
    assert (cfg.pruning.stage.train.max_steps, cfg.finetune.train.max_steps) == (
        shared_stage,
        shared_ft,
    )
    assert cfg.stage_config(3).mask_lr == cfg.pruning.stage.mask_lr
    with pytest.raises(ConfigError, match="pruning.arms.0.stage_steps"):
        load_config(REPO / "configs" / "smoke.yaml", ["pruning.arms.0.stage_steps=0"])


def test_extends_merges_sections_and_replaces_lists(tmp_path):
    (tmp_path / "base.yaml").write_text((REPO / "configs/smoke.yaml").read_text())
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text(
        "extends: ../base.yaml\n"
        "experiment: {name: child}\n"
        "pruning:\n  arms:\n    - {method: sft, decoder_layers: 1}\n"
    )
    base, cfg = load_config(tmp_path / "base.yaml"), load_config(child)
    assert cfg.experiment.name == "child"
    assert cfg.experiment.seed == base.experiment.seed  # the rest of the section is the base's
    assert [a.method for a in cfg.pruning.arms] == ["sft"]  # a list replaces, it is not merged
    assert cfg.pruning.stage == base.pruning.stage and cfg.data == base.data
    # --set applies on top of the merged config
    over = load_config(child, ["experiment.seed=7"])
    assert over.experiment.seed == 7 and over.experiment.name == "child"


def test_demo_compare_shares_the_demos_cached_sections():
    """The comparison sweep reuses the demo's data, teacher and NASH arm through the cache only
    if those sections stay identical: `extends: demo.yaml` keeps them so."""
    demo, compare = (
        load_config(REPO / "configs/demo.yaml"),
        load_config(REPO / "configs/demo-compare.yaml"),
    )
    for section in ("data", "model", "teacher", "finetune", "evaluation", "selection"):
        assert getattr(compare, section) == getattr(demo, section), section
    assert compare.experiment.seed == demo.experiment.seed
    assert compare.pruning.stage == demo.pruning.stage
    assert compare.pruning.arms[0] == demo.pruning.arms[0]
    assert compare.registry.model_name != demo.registry.model_name


@pytest.mark.parametrize(
    "extends, message",
    [
        ("missing.yaml", "extends: 'missing.yaml' not found"),
        ("self.yaml", "makes a cycle (self.yaml -> self.yaml)"),
        ("[1]", "extends: must name a config file"),
    ],
)
def test_bad_extends_is_a_config_error(tmp_path, extends, message):
    path = tmp_path / "self.yaml"
    path.write_text(f"extends: {extends}\nexperiment: {{name: x}}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value)
    res = nash("validate", path)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
