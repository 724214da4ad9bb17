"""The ``nash`` commands that take a finished sweep to serving (README, "From sweep to serving").

    nash benchmark --sweep RUN_ID [--hardware-name NAME] [--price-per-hour P] [--tracking-uri URI]
    nash select --sweep RUN_ID --hardware NAME [--tracking-uri URI]
    nash promote VERSION [--model NAME] [--reason TEXT]
    nash rollback [--model NAME] [--reason TEXT]
    nash serve [--model NAME] [--alias champion] [--port 5001]

``nash benchmark --sweep`` is in nash_cli/benchmark.py. The work is in nash_mlflow/registry.py
(MLflow only: no Prefect server starts). The store is ``--tracking-uri``, else
``MLFLOW_TRACKING_URI``, else the workdir's SQLite file; a store that does not exist is an
error (exit 2), never created empty.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def tracking_store(args) -> str:
    from nash_core.errors import TrackingError
    from nash_mlflow.tracking import default_tracking_uri

    if args.tracking_uri:
        uri = args.tracking_uri
    else:
        workdir = Path(args.workdir) if args.workdir else Path(os.environ.get("NASH_HOME", ".nash"))
        uri = default_tracking_uri(workdir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise TrackingError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: pass "
            "--tracking-uri (or set MLFLOW_TRACKING_URI, or --workdir)"
        )
    return uri


def store_args(p: argparse.ArgumentParser, when: str = "") -> None:
    p.add_argument(
        "--tracking-uri",
        help=f"{when}MLflow store (default MLFLOW_TRACKING_URI, else the workdir's mlflow.db)",
    )
    p.add_argument("--workdir", help=f"{when}default $NASH_HOME or ./.nash (its mlflow.db)")


# ------------------------------------------------------------------- select, promote, rollback
def cmd_select(args) -> int:
    from nash_mlflow.registry import select_for_hardware

    out = select_for_hardware(tracking_store(args), args.sweep, args.hardware)
    print(
        f"{out['model']}@{out['alias']} -> version {out['version']} ({out['label']}"
        f"{'' if out['moved'] else ', unchanged'}): {out['reason']}"
    )
    return 0


def cmd_promote(args) -> int:
    from nash_mlflow.registry import promote

    out = promote(
        tracking_store(args), args.version, model=args.model, alias=args.alias, why=args.reason
    )
    if out["moved"]:
        print(f"{out['model']}@{out['alias']}: version {out['from'] or '-'} -> {out['to']}")
    else:
        print(f"{out['model']}@{out['alias']} already is version {out['to']}: nothing moved")
    return 0


def cmd_rollback(args) -> int:
    from nash_mlflow.registry import rollback

    out = rollback(tracking_store(args), model=args.model, alias=args.alias, why=args.reason)
    print(f"{out['model']}@{out['alias']}: version {out['from']} -> {out['to']} (rolled back)")
    return 0


# --------------------------------------------------------------------------- serve
def check_served_model(client, run) -> None:
    """The version's logged weights exist and hold what was logged (fetched to a temporary
    directory and checked: a damaged artifact is a ModelError naming the version, exit 2)."""
    import tempfile

    from nash_mlflow.model_check import check_model
    from nash_mlflow.registry import model_weights

    weights, _ = model_weights(client, run)
    with tempfile.TemporaryDirectory(prefix="nash-serve-check-") as tmp:
        local = client.download_artifacts(run.info.run_id, weights, tmp)
        check_model(client, run.info.run_id, local)


def cmd_serve(args) -> int:
    """``mlflow models serve`` from this installation, on the model an alias points at.

    MLflow's server starts ``uvicorn`` found on PATH; run as ``.venv/bin/mlflow`` without an
    activated venv it is not there (exit 127). This puts the interpreter's own ``bin`` first on
    PATH and replaces this process with the server (Ctrl-C / SIGTERM stop it)."""
    from nash_mlflow.registry import alias_version, resolve_model
    from nash_mlflow.sweeps import SweepError
    from nash_mlflow.tracking import make_client

    uri = tracking_store(args)
    client = make_client(uri)
    model = resolve_model(client, args.model, uri)
    version = alias_version(client, model, args.alias)
    if version is None:
        raise SweepError(
            f"{model} has no alias {args.alias!r}: run a sweep, `nash promote "
            f"VERSION` or `nash select --hardware NAME` first"
        )
    check_served_model(client, client.get_run(client.get_model_version(model, version).run_id))
    bindir = Path(sys.executable).parent
    mlflow_bin = bindir / "mlflow"
    if not mlflow_bin.is_file():
        raise SweepError(
            f"no mlflow executable next to {sys.executable}: install nash-pipeline "
            "into this environment (make install)"
        )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cmd = [
        str(mlflow_bin),
        "models",
        "serve",
        "-m",
        f"models:/{model}@{args.alias}",
        "--env-manager",
        "local",
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: binding to {args.host} lets anyone who reaches this port use the model; "
            "the server has no authentication.",
            file=sys.stderr,
        )
    print(
        f"serving {model}@{args.alias} (version {version}) on http://{args.host}:{args.port}"
        f"/invocations  (store {uri}; Ctrl-C to stop)",
        flush=True,
    )
    os.execve(str(mlflow_bin), cmd, env)
    return 0  # not reached


# --------------------------------------------------------------------------- parsers
def add_rollout_commands(sub) -> None:
    """``select``, ``promote``, ``rollback`` and ``serve`` on the ``nash`` parser."""
    s = sub.add_parser(
        "select",
        help="choose a sweep's champion for a named hardware (after "
        "`nash benchmark --sweep`): alias champion-<hardware>",
    )
    s.add_argument("--sweep", required=True, metavar="RUN_ID")
    s.add_argument(
        "--hardware",
        required=True,
        metavar="NAME",
        help="a hardware name the sweep was re-benchmarked under",
    )
    store_args(s)
    s.set_defaults(func=cmd_select)

    def model_args(p):
        p.add_argument("--model", help="registered model (default: the store's only one)")
        p.add_argument("--alias", default="champion", help="default %(default)s")
        p.add_argument("--reason", help="why (recorded with the move)")
        store_args(p)

    pr = sub.add_parser(
        "promote",
        help="point the champion alias at a registered version "
        "(recorded in the registered model's tags)",
    )
    pr.add_argument("version", help="registered model version, e.g. 3")
    model_args(pr)
    pr.set_defaults(func=cmd_promote)

    rb = sub.add_parser("rollback", help="point the champion alias back at the previous champion")
    model_args(rb)
    rb.set_defaults(func=cmd_rollback)

    sv = sub.add_parser(
        "serve",
        help="serve the champion (or another alias) over HTTP with "
        "`mlflow models serve` from this installation",
    )
    sv.add_argument("--model", help="registered model (default: the store's only one)")
    sv.add_argument("--alias", default="champion", help="default %(default)s; e.g. champion-<hw>")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5001)
    store_args(sv)
    sv.set_defaults(func=cmd_serve)
