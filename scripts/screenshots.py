"""Screenshots of a sweep in the MLflow UI, for the README (headless Chromium, 1600x1000).

    .venv/bin/python scripts/screenshots.py [--workdir .nash | --tracking-uri URI]
                                            [--run-id SWEEP_RUN_ID] [--out docs/img]

Serves the store with ``mlflow server`` on a free loopback port (a ``http(s)://`` tracking URI
is used as it is), opens the links ``nash run`` prints in Chromium driven over the DevTools
protocol, and writes:

- ``mlflow-tradeoff-table.png``: the sweep's saved view, one row per candidate;
- ``mlflow-tradeoff-charts.png``: the same view's charts (ROUGE-L against batch-1 latency first);
- ``mlflow-sweep-report.png``: the sweep run's page, its Markdown description expanded.

Needs Chromium (``chromium``, ``chromium-browser``, ``google-chrome``, or ``$CHROMIUM``). On
Debian/Ubuntu: ``apt-get update && apt-get install -y chromium`` (as root).
The MLflow assistant panel, which MLflow opens once per browser on a loopback host, is closed
first (it would cover the table); nothing else about the UI is changed.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 1600, 1000
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = (
    "install Chromium: `apt-get update && apt-get install -y chromium` on Debian/Ubuntu "
    "(as root), or point $CHROMIUM at a Chrome/Chromium binary"
)


class ScreenshotError(Exception):
    """Something the user must fix (no browser, no store, the page never showed the sweep)."""


def find_chromium() -> str:
    for name in ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) + list(BROWSERS):
        path = shutil.which(name)
        if path:
            return path
    raise ScreenshotError(
        f"no Chromium found (looked for ${'{CHROMIUM}'}, {', '.join(BROWSERS)}); " + INSTALL
    )


class Browser:
    """Headless Chromium driven over the DevTools protocol (a websocket; ``websockets`` comes
    with Prefect), with a fresh profile that is removed on close."""

    def __init__(self, chromium: str, width: int = WIDTH, height: int = HEIGHT):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="nash-screenshots-")
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise ScreenshotError(f"{chromium} did not start (exit {self.proc.poll()})")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(p for p in json.load(r) if p["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == i:
                if "error" in msg:
                    raise ScreenshotError(f"Chromium: {method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        r = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return r.get("result", {}).get("value")

    def open(self, url: str, ready: str, timeout: float = 90) -> None:
        """Load ``url`` afresh (not as a hash change of the page already open) and wait until
        the JS expression ``ready`` is true, then let it settle."""
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        check = f"(() => {{ try {{ return Boolean({ready}); }} catch (e) {{ return false; }} }})()"
        while not self.js(check):
            if time.monotonic() > deadline:
                text = (self.js("document.body ? document.body.innerText : ''") or "")[:600]
                raise ScreenshotError(
                    f"{url} did not show what was expected ({ready}) within "
                    f"{timeout:.0f} s; the page said: {text!r}"
                )
            time.sleep(0.5)
        time.sleep(2.5)  # charts animate, late requests land

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(base64.b64decode(data))
        tmp.replace(path)
        return path

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(tracking_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on the store, loopback only; returns the process and its base URL."""
    port = _free_port()
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [
            mlflow,
            "server",
            "--backend-store-uri",
            tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=3) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            raise ScreenshotError(f"mlflow server did not come up; its log: {log}")
        time.sleep(1)


def take(tracking_uri: str, run_id: str | None, out: Path) -> list[Path]:
    from mlflow.tracking import MlflowClient

    from nash_mlflow.sweeps import find_sweep
    from nash_mlflow.views import run_page_url, sweep_links

    chromium = find_chromium()
    client = MlflowClient(tracking_uri)
    sweep = find_sweep(client, tracking_uri, run_id)
    exp, sid = sweep.info.experiment_id, sweep.info.run_id
    n = len(
        client.search_runs(
            [exp], f"tags.mlflow.parentRunId = '{sid}' and tags.`nash.kind` = 'candidate'"
        )
    )
    server = None
    with tempfile.TemporaryDirectory(prefix="nash-screenshots-") as tmp:
        try:
            if tracking_uri.startswith(("http://", "https://")):
                base = tracking_uri.rstrip("/")
            else:
                server, base = serve(tracking_uri, Path(tmp) / "server.log")
            links = sweep_links(base, exp, sid)
            links = {k: v.replace("http://127.0.0.1:5000", base) for k, v in links.items()}
            browser = Browser(chromium)
            try:
                # MLflow opens its assistant panel once per browser on a loopback host
                browser.open(
                    f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning",
                    "document.body.innerText.includes('Runs')",
                )
                browser.js(
                    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1',"
                    " 'true')"
                )
                shots = []
                browser.open(
                    links["trade-off table"],
                    f"document.body.innerText.includes('{n} matching runs') && "
                    f"document.querySelectorAll('.ag-row').length >= {n}",
                )
                shots.append(browser.screenshot(out / "mlflow-tradeoff-table.png"))
                browser.open(
                    links["trade-off charts"],
                    "document.body.innerText.includes('Trade-off') && "
                    "document.querySelectorAll('.js-plotly-plot').length > 0",
                )
                shots.append(browser.screenshot(out / "mlflow-tradeoff-charts.png"))
                browser.open(
                    run_page_url(base, exp, sid),
                    "document.body.innerText.includes('Decision.')",
                )
                browser.js(
                    "document.querySelectorAll('[aria-label=\"Expand description\"]')"
                    ".forEach(e => e.click())"
                )
                # the plot is an artifact the page fetches after the description renders
                deadline = time.monotonic() + 30
                while not browser.js(
                    "[...document.images].some(i => i.src.includes("
                    "'get-artifact') && i.complete && i.naturalWidth > 0)"
                ):
                    if time.monotonic() > deadline:
                        raise ScreenshotError(
                            "the Pareto plot in the sweep's description did "
                            "not load (is pareto.png among its artifacts?)"
                        )
                    time.sleep(0.5)
                time.sleep(1)
                shots.append(browser.screenshot(out / "mlflow-sweep-report.png"))
                return shots
            finally:
                browser.close()
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="screenshots.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--workdir",
        default=os.environ.get("NASH_HOME", ".nash"),
        help="the store of this workdir (default $NASH_HOME or ./.nash)",
    )
    p.add_argument("--tracking-uri", help="any MLflow store or server instead of the workdir's")
    p.add_argument("--run-id", help="the sweep to show (default: the latest)")
    p.add_argument("--out", default=str(ROOT / "docs" / "img"), help="folder (default docs/img)")
    args = p.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from nash_core.errors import NashError
    from nash_mlflow.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(args.workdir)
    try:
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise ScreenshotError(
                f"no MLflow store at {uri.removeprefix('sqlite:///')}: run "
                "`make demo` first, or pass --workdir / --tracking-uri"
            )
        for path in take(uri, args.run_id, Path(args.out)):
            print(f"wrote {path}")
    except (ScreenshotError, NashError) as exc:
        print(f"screenshots.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
