"""Experiment tracking with MLflow: the one module that imports ``mlflow``.

Training (``train/loop.py``, rank 0 only), scoring (``scoring/local.py``), ``meddiff report`` and ``meddiff demo``
open a run here and log through it:

    run = open_run(cfg.tracking, cfg.output_dir, cfg.name, run_name="train", tags={"meddiff.job": "train"})
    with run:                       # FINISHED, or FAILED / KILLED when the block raises
        run.log_params(flatten(to_dict(cfg)))
        run.log_metrics({"loss": 0.12, "lr": 1e-4}, step=20)   # a metric's history is its curve
        run.log_artifacts(bundle, "bundle")

With ``tracking.enabled`` false (the default outside ``meddiff demo``) ``open_run`` returns ``NO_RUN``, whose methods
do nothing, and mlflow is never imported; a missing mlflow package is one warning line and the same no-op.

The explicit ``MlflowClient`` API is used, never the fluent ``mlflow.start_run``: no process-global active run, so a
user's own active run is left alone and Ray workers share no state. Parent and child runs are linked through the
``mlflow.parentRunId`` tag, which is how the MLflow UI nests runs.

The default store is SQLite (``sqlite:///<output_dir>/mlflow.db``, artifacts in ``<output_dir>/mlartifacts``): it
works offline, is MLflow 3's default backend, and ``mlflow ui --backend-store-uri`` reads it. The file store
(``./mlruns``) is in maintenance mode since MLflow 3.7 and refused from 3.18 on unless ``MLFLOW_ALLOW_FILE_STORE`` is
set. A new SQLite store costs MLflow's schema migrations once (~9 s on a 2-core CPU). MLflow's usage telemetry is
switched off (``MLFLOW_DISABLE_TELEMETRY``) unless the environment sets it: nothing reaches the network unless
``tracking.uri`` names a server.

A store that cannot be opened is a ``TrackingError`` before any work starts; a logging call that fails later (a server
gone away mid-run) is one warning and the run stops logging, since ``metrics.jsonl``, the bundle and the results
folder remain the record.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from meddiff.config import TrackingConfig
from meddiff.errors import TrackingError

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs
RUN_ID_FILE = "mlflow_run_id"  # a training run folder's file naming its MLflow run (a resumed training continues it)
META_KEY = "tracking"  # a results folder's meta.json: {"run_id", "tracking_uri", "experiment_id"} of its scoring run
MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
BATCH = 100  # params per log_batch call (MLflow's limit)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def store_uri(tc: TrackingConfig, output_dir: str | Path) -> str:
    """The tracking URI: ``tracking.uri``, else the SQLite store ``<output_dir>/mlflow.db`` (absolute)."""
    if tc.uri:
        return tc.uri
    return f"sqlite:///{Path(output_dir).expanduser().resolve() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``mlartifacts`` beside a SQLite store's file (MLflow would otherwise
    use ``./mlruns`` under the working directory); None for a server or another store, which decide themselves."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///"):])
    if str(path) in ("", ":memory:"):
        return None
    return path.expanduser().resolve().parent.joinpath("mlartifacts").as_uri()


class NoRun:
    """What ``open_run`` returns when tracking is off: every call does nothing."""

    active = False
    run_id = ""
    uri = ""

    def __enter__(self) -> "NoRun":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def record(self) -> dict[str, str] | None:
        return None


NO_RUN = NoRun()


class TrackedRun(NoRun):
    """An open MLflow run: log calls go to the store; the first failing call warns once and turns logging off."""

    active = True

    def __init__(self, client: Any, run_id: str, uri: str, experiment_id: str,
                 log: Callable[[str], None] = print) -> None:
        self._client, self.run_id, self.uri, self.experiment_id, self._log = client, run_id, uri, experiment_id, log

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        else:
            self.finish("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    def _call(self, what: str, fn: Callable[[], Any]) -> None:
        if not self.active:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the local files stay the record; say so once and go on
            self.active = False
            self._log(f"[tracking] MLflow {what} failed at {self.uri} ({type(exc).__name__}: {exc}); this run logs "
                      f"nothing more to MLflow (metrics.jsonl, the bundle and the results folder are unaffected)")

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(param_key(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            self._call("log_params", lambda chunk=chunk: self._client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if items:
            self._call("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        if items:
            self._call("set_tags", lambda: self._client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifacts", lambda: self._client.log_artifacts(self.run_id, str(folder), artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", lambda: self._client.set_terminated(self.run_id, status))

    def record(self) -> dict[str, str]:
        """What a results folder's meta.json keeps to find this run again (``reopen``)."""
        return {"run_id": self.run_id, "tracking_uri": self.uri, "experiment_id": self.experiment_id}


def param_key(key: Any) -> str:
    """A config key as an MLflow name (letters, digits and ``_-. /`` only; a mapping key such as a label or a derived
    column name may hold others): every other character becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(key))


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, (list, tuple)) else str(list(value))
    return text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."


def _client(uri: str, log: Callable[[str], None]) -> Any | None:
    """An MlflowClient on ``uri``, or None (one warning) when mlflow is not installed."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        log("[tracking] tracking.enabled is true but the mlflow package is not installed (pip install mlflow-skinny); "
            "not tracking this run")
        return None
    with warnings.catch_warnings():
        # SQLAlchemy 2.1 flags a loader option of MLflow's models when the store first builds them; not ours to fix
        warnings.filterwarnings("ignore", message=".*noload.*")
        return MlflowClient(tracking_uri=uri)  # opens (and creates) the store: a bad URI fails here


def open_run(tc: TrackingConfig, output_dir: str | Path, default_experiment: str, run_name: str,
             tags: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
             resume_run_id: str = "", log: Callable[[str], None] = print) -> TrackedRun | NoRun:
    """Start a run in the experiment ``tracking.experiment`` (default ``default_experiment``), nested under
    ``tracking.parent_run_id`` when set, with ``params`` (flat) logged. ``resume_run_id`` (a training run restarted
    from its checkpoint) continues that run when this store has it with the same params; with other params (a run
    extended to more steps) a new run starts, tagged ``meddiff.continues_run``, since a run's params are immutable.

    Returns ``NO_RUN`` when tracking is off or mlflow is missing; raises ``TrackingError`` when the store cannot be
    opened or refuses the run."""
    if not tc.enabled:
        return NO_RUN
    uri = store_uri(tc, output_dir)
    name = tc.experiment or default_experiment
    values = {param_key(k): _param_value(v) for k, v in (params or {}).items()}
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if tc.parent_run_id:
        all_tags[PARENT_TAG] = tc.parent_run_id
    try:
        client = _client(uri, log)
        if client is None:
            return NO_RUN
        previous = _existing_run(client, resume_run_id) if resume_run_id else None
        if previous is not None and previous.data.params == values:
            client.update_run(resume_run_id, status="RUNNING")
            return TrackedRun(client, resume_run_id, uri, previous.info.experiment_id, log)
        if previous is not None:
            all_tags["meddiff.continues_run"] = resume_run_id
        experiment_id = _experiment_id(client, name, artifact_root(uri))
        run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike: say where and how to go on
        raise TrackingError(f"tracking.uri {uri!r}: MLflow could not start a run in experiment {name!r} "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); fix the URI or the server, "
                            f"or set tracking.enabled=false") from exc
    tracked = TrackedRun(client, run.info.run_id, uri, experiment_id, log)
    tracked.log_params(values)
    return tracked


def reopen(record: Mapping[str, Any] | None, log: Callable[[str], None] = print) -> TrackedRun | NoRun:
    """The run a results folder's meta.json names (``TrackedRun.record``), to log more artifacts to it (the report);
    ``NO_RUN`` when there is none, mlflow is missing or the store no longer has the run (one warning)."""
    if not record or not record.get("run_id") or not record.get("tracking_uri"):
        return NO_RUN
    try:
        client = _client(str(record["tracking_uri"]), log)
        if client is None or _existing_run(client, str(record["run_id"])) is None:
            raise LookupError("no such run")
    except Exception as exc:  # noqa: BLE001 - the report is written anyway; the link to MLflow is a convenience
        log(f"[tracking] cannot reach MLflow run {record.get('run_id')} at {record.get('tracking_uri')} "
            f"({type(exc).__name__}: {exc}); not logging to it")
        return NO_RUN
    return TrackedRun(client, str(record["run_id"]), str(record["tracking_uri"]),
                      str(record.get("experiment_id", "")), log)


def _existing_run(client: Any, run_id: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (artifacts at ``artifact_location``) when missing; a concurrent creator
    (two jobs starting at once) wins the race and its experiment is used."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {name!r} is deleted in {client.tracking_uri}; restore it "
                                f"(mlflow experiments restore) or set tracking.experiment to another name")
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
