"""The fingerprint of a results folder: the checkpoint and every setting that changes the numbers in its rows.

Rows scored with another checkpoint, another ``n_draws``, seed, rule, stopping rule or another decoding of the
images must never share a folder with earlier rows: ``meddiff.scoring.shards.plan_shards`` compares the fingerprint
saved with the plan to the new run's and refuses a mismatch (``ResultsFolderInUse``).

The settings are taken from the configs by EXCLUSION: every field counts except the ones listed in
``SCORE_EXCLUDED`` / ``DATA_EXCLUDED`` (speed, placement, and what the plan checks on its own), so a setting added
to ``ScoreConfig`` or ``DataConfig`` later is part of the fingerprint unless someone decides it is not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from meddiff.config import to_dict

# ScoreConfig fields that do not change any number in a row (speed, device, placement) or that choose rows, which the
# plan checks itself through the ids of the planned rows (split, limit) and its shard size (shard_size)
SCORE_EXCLUDED = frozenset({"batch_size", "device", "precision", "num_threads", "max_batch", "channels_last", "compile",
                            "shard_size", "split", "limit"})
# DataConfig fields that do not change the pixels or labels of a planned row (the leakage check only refuses data)
DATA_EXCLUDED = frozenset({"leakage_check"})
CHECKPOINT_KEYS = ("model_id", "weights_sha256", "kind")


def result_settings(bundle_meta: Mapping[str, Any], score_cfg: Any, data_cfg: Any = None,
                    data_fingerprint: str | None = None) -> dict[str, Any]:
    """The flat settings a results folder is tied to: ``checkpoint.*`` (model id, weights hash, method kind),
    ``score.*`` and ``data.*`` (every config field not excluded), and ``data.fingerprint`` (the manifest's)."""
    out: dict[str, Any] = {f"checkpoint.{k}": bundle_meta.get(k) for k in CHECKPOINT_KEYS}
    for key, value in sorted(to_dict(score_cfg).items()):
        if key not in SCORE_EXCLUDED:
            out[f"score.{key}"] = value
    if data_cfg is not None:
        for key, value in sorted(to_dict(data_cfg).items()):
            if key not in DATA_EXCLUDED:
                out[f"data.{key}"] = value
    if data_fingerprint is not None:
        out["data.fingerprint"] = data_fingerprint
    return json.loads(json.dumps(out, sort_keys=True, default=str))  # plain JSON values (tuples -> lists)


def digest(settings: Mapping[str, Any]) -> str:
    """A SHA-256 of the settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"score.n_draws: 5 -> 7"`` for every setting whose value differs (a missing one reads ``<unset>``)."""
    missing = "<unset>"
    return [f"{k}: {_show(old.get(k, missing))} -> {_show(new.get(k, missing))}"
            for k in sorted(set(old) | set(new)) if old.get(k, missing) != new.get(k, missing)]


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
