"""The ``nash`` command line.

    nash init --model DIR_OR_HUB_ID --data FILES [--source-column X --target-column Y]
              [--time-budget 2h] [--output configs/mine.yaml]       (nash_cli/init.py)
    nash validate CONFIG [--set key.path=value ...]
    nash run CONFIG [--set ...] [--workdir DIR]
    nash benchmark MODEL_DIR [MODEL_DIR ...] [--batch-sizes 1,8] [--new-tokens N] [--json FILE]
    nash deploy CONFIG --cron "0 3 * * *" [--name NAME] [--watch] [--start-server]
    nash watch CONFIG [--set ...] [--workdir DIR]
    nash ui [--workdir DIR] [--port 5000]
    nash report [--run-id ID] [--workdir DIR | --tracking-uri URI] [--markdown F] [--html F]
    nash benchmark --sweep RUN_ID [--hardware-name NAME] [--price-per-hour P] [--tracking-uri URI]
    nash select --sweep RUN_ID --hardware NAME
    nash promote VERSION | nash rollback | nash serve     (nash_cli/rollout.py)
    (nash benchmark: nash_cli/benchmark.py)

Exit codes: 0 success, 2 bad input (config, data, model; every problem is listed, nothing is
trained or tracked), 1 an unexpected failure (traceback), 130 interrupted.
Heavy imports (torch, prefect, mlflow) happen only in the subcommands that need them, so
``nash validate`` answers in about a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def default_workdir() -> Path:
    return Path(os.environ.get("NASH_HOME", ".nash"))


def _err(msg: str) -> None:
    print(f"nash: error: {msg}", file=sys.stderr)


def _load(args) -> NashConfig:  # noqa: F821
    from nash_core.config import load_config

    return load_config(args.config, args.set)


def check_inputs(cfg) -> None:
    """Cheap checks that need more than the schema: files exist, a local base model's depth.

    Raises ConfigError listing every problem; runs before any expensive work.
    """
    from nash_core.config import ConfigError

    problems = _file_problems(cfg) + _base_model_problems(cfg)
    if problems:
        raise ConfigError("config", problems)


def _file_problems(cfg) -> list[str]:
    """Local data files and model directories that do not exist or cannot be read."""
    problems: list[str] = []
    if cfg.data.kind == "local":
        for split, f in (cfg.data.files or {}).items():
            p = Path(f)
            if not p.is_file():
                problems.append(f"data.files.{split}: file not found: {p}")
            elif not os.access(p, os.R_OK):
                problems.append(f"data.files.{split}: file is not readable: {p}")
    for field, value in (("teacher.path", cfg.teacher.path), ("model.base", cfg.model.base)):
        if value and _looks_local(value) and not Path(value).expanduser().is_dir():
            problems.append(f"{field}: directory not found: {value}")
    return problems


def _base_model_problems(cfg) -> list[str]:
    """A local base model without config.json, or with fewer decoder layers than an arm keeps."""
    import json

    from nash_core.base_model import num_decoder_layers
    from nash_core.config import decoder_layer_problems

    base = Path(cfg.model.base)
    if cfg.model.base == "demo" or not base.is_dir():
        return []
    cfg_file = base / "config.json"
    if not cfg_file.is_file():
        return [f"model.base: {base} has no config.json (expected a save_pretrained dir)"]
    try:
        depth = num_decoder_layers(json.loads(cfg_file.read_text()))
    except (ValueError, TypeError):  # not a T5/BART config: the base step names the architecture
        return []
    return decoder_layer_problems(cfg.pruning.arms, depth)


def _looks_local(ref: str) -> bool:
    """A model reference that can only be a local path (hub ids never start like this)."""
    return ref.startswith(("/", "./", "../", "~")) or ref in (".", "..")


# --------------------------------------------------------------------------- subcommands
def cmd_validate(args) -> int:
    cfg = _load(args)
    check_inputs(cfg)
    arms = ", ".join(a.label for a in cfg.pruning.arms)
    print(
        f"{args.config}: OK  (experiment '{cfg.experiment.name}', base {cfg.model.base}, "
        f"data {cfg.data.kind}{':' + cfg.data.name if cfg.data.name else ''}, arms: {arms})"
    )
    return 0


def cmd_run(args) -> int:
    cfg = _load(args)  # validate before anything is created or imported
    check_inputs(cfg)
    workdir = _workdir(args)
    from nash_cli.sweep import run_sweep

    result = run_sweep(str(args.config), list(args.set or []), str(workdir), cfg)
    if isinstance(result, dict):
        champ = result.get("champion")
        if champ:
            print(f"champion: {champ}")
        _print_promotion(result)
        if "computed" in result:
            print(
                f"steps: {len(result['computed'])} computed, {len(result['reused'])} reused "
                f"from the cache ({Path(workdir) / 'runs'})"
            )
        if result.get("tracking_uri"):
            print(
                f"results: MLflow store {result['tracking_uri']} (open it with `nash ui"
                f"{' --workdir ' + str(workdir) if args.workdir else ''}`)"
            )
        _print_links(result)
    return 0


def _print_promotion(result: dict) -> None:
    """What the promotion gate decided (tasks/promotion.py)."""
    promotion = result.get("promotion")
    if promotion:
        print(f"promotion: {promotion['decision']} ({promotion['reason']})")


def _print_links(result: dict) -> None:
    """The MLflow links of a finished sweep, the trade-off view first (nash_mlflow/views.py)."""
    if result.get("links"):
        from nash_mlflow.views import format_links

        print(format_links(result["links"]))


def _workdir(args) -> Path:
    workdir = Path(args.workdir) if getattr(args, "workdir", None) else default_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def cmd_deploy(args) -> int:
    cfg = _load(args)
    check_inputs(cfg)
    workdir = _workdir(args)
    from nash_cli.sweep import prepare_environment

    prepare_environment(workdir)
    import signal

    from nash_cli.deploy import deploy

    def stop(signum, frame):  # SIGTERM (a service manager's stop) ends serving like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    deploy(
        str(args.config),
        list(args.set or []),
        args.cron,
        args.name,
        str(workdir),
        watch=args.watch,
        start_server=args.start_server,
    )
    return 0


def cmd_watch(args) -> int:
    cfg = _load(args)
    check_inputs(cfg)
    workdir = _workdir(args)
    from nash_cli.sweep import prepare_environment, prepare_temporary_prefect_db

    prepare_environment(workdir)
    prepare_temporary_prefect_db()
    from flows.watch import describe, watch_flow

    result = watch_flow(str(args.config), list(args.set or []), str(workdir), cfg)
    print(describe(result))
    if result["sweep"]:
        print(f"champion: {result['sweep']['champion']}")
        _print_promotion(result["sweep"])
        _print_links(result["sweep"])
    return 0


def cmd_report(args) -> int:
    from nash_mlflow.sweep_report import report_main

    workdir = Path(args.workdir) if args.workdir else default_workdir()
    print(
        report_main(
            args.tracking_uri,
            workdir,
            args.run_id,
            markdown=args.markdown,
            html=args.html,
            port=args.port,
        ),
        end="",
    )
    return 0


def cmd_ui(args) -> int:
    import shutil
    import subprocess

    workdir = Path(args.workdir) if args.workdir else default_workdir()
    from nash_mlflow.tracking import default_tracking_uri

    uri = default_tracking_uri(workdir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        _err(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: run `make demo` or "
            f"`nash run CONFIG` first (or pass --workdir)"
        )
        return EXIT_BAD_INPUT
    mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [
        mlflow_bin,
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: binding to {args.host} exposes every run, model and artifact to anyone "
            "who can reach this port; MLflow's UI has no authentication.",
            file=sys.stderr,
        )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    print(f"MLflow UI on http://{args.host}:{args.port}  (store {uri}; Ctrl-C to stop)")
    try:
        from nash_mlflow.views import format_links, latest_sweep_links

        links = latest_sweep_links(uri, args.host, args.port)
    except Exception as exc:  # noqa: BLE001 - the links are a convenience; the UI still starts
        links = None
        print(f"(could not read the latest sweep's links: {exc})", file=sys.stderr)
    if links:
        print("latest sweep:\n" + format_links(links))
    sys.stdout.flush()  # before MLflow's own output, also when stdout is a file or a pipe
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nash",
        description="NASH compression sweeps for encoder-decoder models (T5, Flan-T5, mT5, BART).",
        epilog="Results go to MLflow (SQLite in the workdir unless MLFLOW_TRACKING_URI or "
        "experiment.tracking_uri says otherwise). Docs: README.md.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_config_args(sp):
        sp.add_argument("config", help="YAML config (see configs/)")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY.PATH=VALUE",
            help="override a config value, e.g. --set pruning.arms.0.targets=[0.2,0.4] "
            "(value parsed as YAML; repeatable; validated like the file)",
        )

    v = sub.add_parser("validate", help="check a config; exit 2 listing every problem")
    add_config_args(v)
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser(
        "run",
        help="run the sweep flow of a config (data, teacher, arms, "
        "evaluation, benchmark, selection, registry)",
    )
    add_config_args(r)
    r.add_argument(
        "--workdir",
        help="where models, caches and the default MLflow store go (default $NASH_HOME or ./.nash)",
    )
    r.set_defaults(func=cmd_run)

    from nash_cli.benchmark import add_benchmark_command

    add_benchmark_command(sub)

    d = sub.add_parser(
        "deploy",
        help="serve the sweep as a Prefect deployment on a cron schedule",
        description="Registers a deployment (parameters: the config, overrides, "
        "workdir) on the Prefect server of PREFECT_API_URL and serves it until "
        "Ctrl-C. Schedules never run on Prefect's temporary server: without "
        "PREFECT_API_URL this refuses, unless --start-server.",
    )
    add_config_args(d)
    d.add_argument("--cron", required=True, help="cron schedule, e.g. '0 3 * * *' (03:00 daily)")
    d.add_argument("--name", help="deployment name (default <experiment>-sweep / -watch)")
    d.add_argument(
        "--watch",
        action="store_true",
        help="deploy the watch flow: sweep only when the base model changed",
    )
    d.add_argument(
        "--start-server",
        action="store_true",
        help="no PREFECT_API_URL? start `prefect server` on 127.0.0.1:4200 in the "
        "background (stop it with `prefect server stop`)",
    )
    d.add_argument("--workdir", help="default $NASH_HOME or ./.nash")
    d.set_defaults(func=cmd_deploy)

    w = sub.add_parser(
        "watch",
        help="run the sweep only if the base model changed since the "
        "champion was trained (prints changed:/unchanged:)",
    )
    add_config_args(w)
    w.add_argument("--workdir", help="default $NASH_HOME or ./.nash")
    w.set_defaults(func=cmd_watch)

    u = sub.add_parser("ui", help="open the MLflow UI on the workdir's store")
    u.add_argument("--workdir", help="default $NASH_HOME or ./.nash")
    u.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1; anything else exposes the UI)",
    )
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(func=cmd_ui)

    rp = sub.add_parser(
        "report",
        help="a sweep's decision and candidate table (the workdir's "
        "latest sweep, or --run-id); --markdown / --html to share",
    )
    rp.add_argument(
        "--run-id",
        help="the sweep's MLflow run id (a candidate's leads to its sweep; "
        "default: the latest sweep in the store)",
    )
    rp.add_argument("--workdir", help="whose store to read (default $NASH_HOME or ./.nash)")
    rp.add_argument(
        "--tracking-uri",
        help="read this MLflow store or server instead "
        "(default MLFLOW_TRACKING_URI, else the workdir's)",
    )
    rp.add_argument(
        "--markdown",
        metavar="FILE",
        help="also write the report as Markdown (the Pareto plot next to it)",
    )
    rp.add_argument("--html", metavar="FILE", help="also write a standalone HTML page")
    rp.add_argument(
        "--port",
        type=int,
        default=5000,
        help="the port `nash ui` serves on, for the printed links (default 5000)",
    )
    rp.set_defaults(func=cmd_report)

    from nash_cli.init import add_init_command
    from nash_cli.rollout import add_rollout_commands

    add_init_command(sub)
    add_rollout_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from nash_core.errors import NashError

    try:
        return int(args.func(args) or 0)
    except NashError as exc:  # ConfigError, DataError, ModelError, TrainingError, TrackingError
        _err(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err("interrupted; finished steps are checkpointed, run the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
