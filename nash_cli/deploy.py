"""``nash deploy``: serve the sweep (or the watch flow) as a Prefect deployment on a cron schedule.

Schedules never fire on Prefect's temporary server ("Cannot schedule flows on an ephemeral
server"), so a deployment needs a real API: ``PREFECT_API_URL`` (a `prefect server` or Prefect
Cloud). Without one, ``nash deploy`` refuses and prints the commands to start a server, or, with
``--start-server``, starts ``prefect server start --background`` bound to 127.0.0.1 and says how
to stop it. A schedule that silently never runs is the failure this module exists to prevent.

This process then serves the deployment (Prefect's ``serve``): it polls the server for scheduled
runs and executes them in subprocesses until it gets Ctrl-C / SIGTERM; on the way out Prefect
cancels the runs in flight (training steps checkpoint on SIGTERM, so the next run resumes them)
and pauses the schedule, so runs do not pile up as "Late" while nothing serves them. Teams with
work pools use ``prefect.yaml`` and ``prefect deploy`` instead (README, "Scaling out").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from nash_core.errors import NashError

DEFAULT_PORT = 4200


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, if any."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def api_healthy(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_local_server(port: int = DEFAULT_PORT, wait_s: float = 120.0) -> str:
    """Start ``prefect server start --background`` on 127.0.0.1 and wait until it answers."""
    url = f"http://127.0.0.1:{port}/api"
    if api_healthy(url):
        return url
    prefect_bin = shutil.which("prefect") or str(Path(sys.executable).with_name("prefect"))
    subprocess.run(
        [
            prefect_bin,
            "server",
            "start",
            "--background",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if api_healthy(url):
            return url
        time.sleep(1.0)
    raise NashError(
        f"started `prefect server` on 127.0.0.1:{port} but it did not answer "
        f"within {wait_s:.0f} s; see `prefect server stop` and its logs in "
        f"{os.environ.get('PREFECT_HOME', '~/.prefect')}/server.log"
    )


def refuse_without_server() -> NashError:
    return NashError(
        "no Prefect server is configured (PREFECT_API_URL is unset), and schedules never run on "
        "Prefect's temporary server. Start one and point nash at it:\n"
        "    prefect server start --host 127.0.0.1 --port 4200 --background\n"
        "    export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
        "then run `nash deploy` again, or pass --start-server to let nash start it "
        "(stop it with `prefect server stop`)."
    )


def deploy(
    config_path: str,
    overrides: list[str],
    cron: str,
    name: str | None,
    workdir: str,
    watch: bool = False,
    start_server: bool = False,
) -> None:
    """Register the deployment on the configured server and serve it until interrupted."""
    from nash_core.config import load_config

    cfg = load_config(config_path, overrides)  # reject a bad config before anything starts
    _check_cron(cron)
    url = os.environ.get("PREFECT_API_URL") or configured_api_url()
    if not url:
        if not start_server:
            raise refuse_without_server()
        url = start_local_server()
        os.environ["PREFECT_API_URL"] = url
        print(
            f"started a local Prefect server at {url.removesuffix('/api')} "
            "(bound to 127.0.0.1; stop it with `prefect server stop`)"
        )
    elif not api_healthy(url):
        raise NashError(
            f"the Prefect server at {url} does not answer /health; start it "
            "(`prefect server start`) or fix PREFECT_API_URL"
        )

    from prefect import serve

    from flows.sweep_flow import scheduled_sweep
    from flows.watch import watch_flow

    target = watch_flow if watch else scheduled_sweep
    name = name or f"{cfg.experiment.name}-{'watch' if watch else 'sweep'}"
    params = {
        "config_path": str(Path(config_path).resolve()),
        "overrides": list(overrides),
        "workdir": str(Path(workdir).resolve()),
    }
    deployment = target.to_deployment(
        name=name,
        cron=cron,
        parameters=params,
        tags=["nash", cfg.experiment.name],
        description=f"{target.name} of {config_path} on cron '{cron}'",
    )
    print(
        f"serving deployment '{target.name}/{name}' on cron '{cron}' against {url} "
        "(Ctrl-C or SIGTERM stops serving)"
    )
    try:
        # Prefect's runner handles SIGTERM itself (cancels in-flight runs, pauses the schedule)
        # and returns; Ctrl-C, and SIGTERM before the runner starts, arrive as KeyboardInterrupt.
        serve(deployment, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    print(
        f"stopped serving; the deployment '{target.name}/{name}' stays registered with its "
        "schedule paused (no run starts while nothing serves it); run the same `nash deploy` "
        "again to resume it"
    )


def _check_cron(cron: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise NashError(
            f"--cron '{cron}' is not a valid cron expression "
            "(five fields, e.g. '0 3 * * *' for 03:00 every day)"
        ) from None
