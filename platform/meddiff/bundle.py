"""Checkpoint bundles: one folder per checkpoint, never a pickle.

    <run_dir>/checkpoints/step_000300/
        model.safetensors     inference weights (the EMA copy once it has started)
        metadata.json         model config, label map, image size, data fingerprint, code version, full run config
        train_state/          everything resume needs: raw weights, optimiser state, step (safetensors + JSON)

A bundle is written to a temporary folder and renamed into place, so a crash never leaves a half-written checkpoint
that looks complete. ``resolve_bundle`` accepts a bundle, a ``checkpoints`` folder or a run folder (newest bundle wins);
``read_bundle`` verifies every file against the SHA-256 in metadata.json and, for a folder, falls back past a broken
newest bundle to the previous whole one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from meddiff.durable import commit
from meddiff.errors import CheckpointError
from meddiff.provenance import code_version, file_sha256

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
TRAIN_STATE_DIR = "train_state"
RAW_WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE = "model_raw.safetensors", "optimizer.safetensors", "state.json"
_log = logging.getLogger("meddiff.bundle")
REQUIRED_METADATA = ("format_version", "kind", "model_id", "model", "class_names", "image_size", "channels", "step")


@dataclass(frozen=True)
class Bundle:
    path: Path
    metadata: dict[str, Any]

    @property
    def model_id(self) -> str:
        return self.metadata["model_id"]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["class_names"])


def bundle_name(step: int) -> str:
    return f"step_{step:07d}"


def step_of(name: str) -> int:
    """The step in a bundle folder name (``step_0000300`` -> 300); -1 for any other name."""
    digits = name.removeprefix("step_")
    return int(digits) if name.startswith("step_") and digits.isdigit() else -1


def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; contiguous CPU clones are safe and small for our models
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_bundle(
    checkpoints_dir: Path,
    step: int,
    inference_model: nn.Module,
    metadata: dict[str, Any],
    train_state: dict[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Write ``checkpoints_dir/step_XXXXXXX`` atomically and return its path.

    Args:
        metadata: kind, model, class_names, image_size, channels, ... (model_id, step, code version are added here).
        train_state: optional {"model": nn.Module, "optimizer": torch.optim.Optimizer, "state": json-able dict}.
        keep: keep only the newest ``keep`` bundles (0 keeps all).
    """
    checkpoints_dir = Path(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / bundle_name(step)
    tmp = checkpoints_dir / f".tmp-{bundle_name(step)}-{time.time_ns()}"
    tmp.mkdir()
    save_file(_state_dict_cpu(inference_model), str(tmp / MODEL_FILE))
    if train_state is not None:
        _save_train_state(tmp / TRAIN_STATE_DIR, **train_state)
    files = {f.relative_to(tmp).as_posix(): file_sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
    weights_hash = files[MODEL_FILE]
    meta = dict(metadata)
    meta.update(
        format_version=FORMAT_VERSION,
        step=int(step),
        model_id=f"{meta['model']['name']}-{weights_hash[:12]}",
        weights_sha256=weights_hash,
        files_sha256=files,
        code_version=code_version(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    # metadata last: a bundle whose metadata.json is readable lists the hash of every other file in it
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    commit(tmp, final)  # fsync every file and folder, rename, fsync checkpoints/
    if keep > 0:
        for old in list_bundles(checkpoints_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _save_train_state(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    folder.mkdir()
    save_file(_state_dict_cpu(model), str(folder / RAW_WEIGHTS_FILE))
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, pstate in opt["state"].items():
        for name, value in pstate.items():
            key = f"{idx}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[key] = value
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    payload = {"param_groups": opt["param_groups"], "scalars": scalars, "state": state}
    (folder / STATE_FILE).write_text(json.dumps(payload, indent=2))


def load_train_state(bundle: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore raw weights and optimiser state from a bundle; returns the saved JSON ``state`` (step, EMA counters)."""
    folder = Path(bundle) / TRAIN_STATE_DIR
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{bundle}: has no {TRAIN_STATE_DIR}/ and cannot be resumed (an inference-only bundle?)")
    model.load_state_dict(load_file(str(folder / RAW_WEIGHTS_FILE)))
    payload = json.loads((folder / STATE_FILE).read_text())
    flat = load_file(str(folder / OPTIMIZER_FILE))
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(flat.items()) + list(payload["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": payload["param_groups"]})
    return payload["state"]


def list_bundles(checkpoints_dir: Path) -> list[Path]:
    """Complete bundles in a checkpoints folder, oldest first."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / METADATA_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def resumable_bundle(path: Path) -> bool:
    """Whether ``path`` is a whole bundle a run can resume from: metadata readable, a complete ``train_state/`` and
    every file matching the SHA-256 recorded in ``metadata.json`` (a copy interrupted by a crash, which may stop in the
    middle of any file in any order, fails one of these)."""
    path = Path(path)
    try:
        meta = json.loads((path / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    state = path / TRAIN_STATE_DIR
    if not all(f.is_file() for f in (path / MODEL_FILE, state / RAW_WEIGHTS_FILE, state / OPTIMIZER_FILE,
                                     state / STATE_FILE)):
        return False
    # bundles written before files_sha256 existed record only the weights' hash
    recorded = meta.get("files_sha256") or {MODEL_FILE: meta.get("weights_sha256")}
    try:
        return all(file_sha256(path / name) == digest for name, digest in recorded.items())
    except OSError:
        return False


def resolve_bundle(path: str | Path) -> Path:
    """A bundle folder from a bundle, a checkpoints folder or a run folder (its newest bundle)."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return path
    for candidate in (path, path / "checkpoints"):
        bundles = list_bundles(candidate)
        if bundles:
            return bundles[-1]
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(
        f"{path} is not a checkpoint bundle (no {METADATA_FILE}) and holds no step_* bundles; pass a bundle folder, "
        f"its checkpoints/ folder or the run folder that training wrote"
    )


_HASH_CACHE: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: a server hashes once


def cached_sha256(path: Path) -> str:
    """``file_sha256`` of ``path``, remembered while the file keeps its size and modification time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = file_sha256(path)
    return _HASH_CACHE[key]


def verify_files(folder: Path, meta: dict[str, Any], names: list[str] | None = None) -> None:
    """CheckpointError unless every file recorded in ``metadata.json`` (``files_sha256``; older bundles record only
    ``weights_sha256``) exists and has its recorded SHA-256; ``names`` limits the check to those files."""
    recorded = dict(meta.get("files_sha256") or {})
    if not recorded and meta.get("weights_sha256"):
        recorded = {MODEL_FILE: meta["weights_sha256"]}
    for name, expected in sorted(recorded.items()):
        if names is not None and name not in names:
            continue
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing (metadata.json records it with sha256 "
                                  f"{expected[:16]}...)")
        found = cached_sha256(path)
        if found != expected:
            raise CheckpointError(
                f"{path}: sha256 {found} does not match {expected} recorded in metadata.json; the file was changed or "
                f"cut short after the bundle was written: restore it or use another bundle"
            )


def check_bundle(folder: Path) -> Bundle:
    """Read a bundle folder's metadata and verify it whole: valid JSON with the required keys, a format this code
    reads, the weights present and every recorded file matching its SHA-256. CheckpointError otherwise."""
    try:
        meta = json.loads((folder / METADATA_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: {METADATA_FILE} is missing (a partial bundle)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder / METADATA_FILE}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder / METADATA_FILE}: expected a JSON object, found {type(meta).__name__}")
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise CheckpointError(f"{folder / METADATA_FILE}: missing keys {missing}")
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: bundle format {meta['format_version']} is newer than this meddiff understands ({FORMAT_VERSION})"
        )
    if not (folder / MODEL_FILE).is_file():
        raise CheckpointError(f"{folder}: {MODEL_FILE} is missing")
    verify_files(folder, meta)
    return Bundle(path=folder, metadata=meta)


def _bundle_dirs(path: Path) -> list[Path]:
    """Every ``step_*`` folder (whole or not) in ``path`` or ``path/checkpoints``, oldest first."""
    for candidate in (path, path / "checkpoints"):
        if candidate.is_dir():
            found = sorted((p for p in candidate.iterdir() if p.is_dir() and step_of(p.name) >= 0),
                           key=lambda p: p.name)
            if found:
                return found
    return []


def read_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle (weights are loaded by the caller that knows the architecture).

    ``path`` names a bundle (it must be whole: CheckpointError otherwise), or a checkpoints / run folder: its newest
    whole bundle, falling back past a partial or corrupt newest one with a warning naming both."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return check_bundle(path)
    candidates = _bundle_dirs(path)
    if not candidates:
        resolve_bundle(path)  # raises the missing / not-a-bundle error
        raise CheckpointError(f"{path}: holds no checkpoint bundle")
    failures: list[tuple[Path, CheckpointError]] = []
    for folder in reversed(candidates):
        try:
            bundle = check_bundle(folder)
        except CheckpointError as exc:
            failures.append((folder, exc))
            continue
        if failures:
            newest, why = failures[0]
            _log.warning("checkpoint %s is broken (%s); using the previous whole bundle %s", newest, why, folder)
        return bundle
    raise failures[0][1]


def load_weights(bundle: Bundle, model: nn.Module) -> nn.Module:
    """Load the bundle's inference weights into ``model`` strictly (a mismatch names the differing keys) after
    checking their SHA-256 against metadata.json (cached, so a server does not rehash per request)."""
    verify_files(bundle.path, bundle.metadata, [MODEL_FILE])
    state = load_file(str(bundle.path / MODEL_FILE))
    expected = set(model.state_dict())
    got = set(state)
    if expected != got:
        raise CheckpointError(
            f"{bundle.path}: weights do not match the architecture in metadata.json: missing {sorted(expected - got)[:5]}, "
            f"unexpected {sorted(got - expected)[:5]}"
        )
    model.load_state_dict(state)
    return model


def check_resumable(bundle: Path, cfg: Any, fingerprint: str, kind: str, fields: Callable[[Any], Any],
                    what: str) -> None:
    """Refuse to resume the run ``cfg.run_dir`` from ``bundle`` unless the bundle is of ``kind``, ``fields(config)``
    (the settings the weights depend on, described by ``what``) is unchanged, and the data fingerprint matches."""
    from meddiff.config import config_from_json

    meta = json.loads((Path(bundle) / "metadata.json").read_text())
    if meta.get("kind") != kind:
        raise CheckpointError(f"{bundle}: the run {cfg.run_dir} holds a {meta.get('kind')!r} checkpoint, not a {kind}; "
                              f"give the run a new name")
    if fields(config_from_json(meta["config"])) != fields(cfg):
        raise CheckpointError(f"{bundle}: the run {cfg.run_dir} was trained with a different {what}; resume needs the "
                              f"same config, or give the run a new name")
    if meta.get("data_fingerprint") != fingerprint:
        raise CheckpointError(
            f"{bundle}: the training data changed since this run started (fingerprint {meta.get('data_fingerprint')} != "
            f"{fingerprint}); resume needs the same data, or give the run a new name"
        )
