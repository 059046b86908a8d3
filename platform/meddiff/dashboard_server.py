"""``meddiff dashboard``: start the Streamlit app (``dashboard/app.py`` of this checkout) on a results root.

The root is handed to the app in ``MEDDIFF_RESULTS_ROOT``; the app reads only under it (``meddiff.results.root``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from meddiff.errors import ConfigError
from meddiff.results.root import ROOT_ENV, ResultsRoot

APP_ENV = "MEDDIFF_DASHBOARD_APP"


def app_path() -> Path:
    """dashboard/app.py next to the package's source root (an editable install or a checkout), or $MEDDIFF_DASHBOARD_APP."""
    path = Path(os.environ.get(APP_ENV) or Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
    if not path.is_file():
        raise ConfigError(f"the dashboard app {path} is missing; run meddiff from a checkout installed with "
                          f"`pip install -e .` (infra/setup.sh does), or set {APP_ENV} to dashboard/app.py")
    return path


def streamlit_command(port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.port", str(port),
            "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal"]


def run_dashboard(results: str | Path, port: int = 8501, host: str = "127.0.0.1") -> int:
    """Run the dashboard in the foreground until Ctrl-C or SIGTERM (Streamlit is stopped with it); returns its exit code."""
    import signal

    root = ResultsRoot(results)  # a missing folder is a clear error before Streamlit starts
    env = dict(os.environ, **{ROOT_ENV: str(root.path)})
    print(f"[dashboard] results root {root.path}; open http://{host}:{port} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(streamlit_command(port, host), env=env)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return 0
