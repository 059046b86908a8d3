"""The endpoint's core, without Ray or HTTP: a checkpoint's predictor (the one batch scoring uses), upload checks,
batched prediction to JSON, and counterfactual explanations as a PNG.

Noise seeding (what makes an online answer equal the batch answer): the diffusion classifier seeds an image's draws
from (run seed, image id). An upload carries its id explicitly (the ``id`` form field or query parameter; pass the
manifest id to reproduce batch scoring) or gets ``sha256:<hex of the file's bytes>``, so the same file always gets the
same draws and the same answer. The run seed, N and rule default to the checkpoint's own score settings.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from meddiff.config import ExplainConfig, ScoreConfig, from_dict
from meddiff.errors import ConfigError, DataError
from meddiff.results import schema as S
from meddiff.serving.upload import ImageInfo, UploadError, UploadLimits, inspect_image


@dataclass(frozen=True)
class ServeSettings:
    """What ``meddiff serve``, ``serve run`` (the ``args`` of the Serve config) and the RayService configure.

    checkpoint: bundle folder, its checkpoints/ folder or the run folder.
    n_draws / seed / rule / t_min / t_max: the diffusion classifier's settings (None: the checkpoint's score config).
    max_batch_size / batch_wait_timeout_s: dynamic request batching (``@serve.batch``).
    max_upload_bytes / min_side / max_side: upload limits (413 / 422 beyond them).
    explain_t_start / explain_steps / explain_guidance: the counterfactual sampler of ``?explain=true``
        (None: the checkpoint's explain config, else the paper's 0.5 / 256 / 7.5).
    num_threads: torch threads of a replica (0: torch's default, one per core); device: auto | cpu | cuda.
    referral: a referral.json of ``meddiff calibrate`` for this checkpoint's model_id (None: no decision); each
        answer then carries decision accept/refer, the threshold, alpha and delta.
    max_concurrent / max_queued: decode + predict requests running at once on a replica and waiting for a slot;
        beyond both a request gets 429 with Retry-After (``serving.limits.Gate``).
    max_explain / explain_queue: the same for ``?explain=true`` (the counterfactual sampler is the slow part).
    request_timeout_s: a request's work (queueing, decoding, predicting, explaining) over it gets 504;
    body_timeout_s: a request body that takes longer to arrive gets 408 (slow clients hold no slot meanwhile).
    token_env: name of an environment variable holding a bearer token (None: no token); every route but /healthz
        then needs ``Authorization: Bearer <token>``. The variable is read by the replica, never the value stored.
    """

    checkpoint: str
    n_draws: int | None = None
    seed: int | None = None
    rule: str | None = None
    t_min: float | None = None
    t_max: float | None = None
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.02
    max_upload_bytes: int = 10 * 2**20
    min_side: int = 8
    max_side: int = 8192
    explain_t_start: float | None = None
    explain_steps: int | None = None
    explain_guidance: float | None = None
    num_threads: int = 0
    device: str = "auto"
    referral: str | None = None
    max_concurrent: int = 2
    max_queued: int = 8
    max_explain: int = 1
    explain_queue: int = 2
    request_timeout_s: float = 60.0
    body_timeout_s: float = 15.0
    token_env: str | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ConfigError(f"max_batch_size >= 1 and batch_wait_timeout_s >= 0 expected, got {self.max_batch_size}, "
                             f"{self.batch_wait_timeout_s}")
        if self.max_concurrent < 1 or self.max_queued < 0 or self.max_explain < 1 or self.explain_queue < 0:
            raise ConfigError(f"serve args: expected max_concurrent >= 1, max_queued >= 0, max_explain >= 1 and "
                              f"explain_queue >= 0, got {self.max_concurrent}, {self.max_queued}, {self.max_explain}, "
                              f"{self.explain_queue}")
        if self.request_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ConfigError(f"serve args: expected request_timeout_s > 0 and body_timeout_s > 0, got "
                              f"{self.request_timeout_s}, {self.body_timeout_s}")

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> "ServeSettings":
        """Strictly from a plain mapping (a Serve config's ``args``); an unknown key is an error naming the allowed ones.

        Values given as strings (``serve run ... key=value`` passes strings) are read as YAML scalars.
        """
        import yaml

        parsed = {k: (yaml.safe_load(v) if isinstance(v, str) and k not in ("checkpoint", "referral", "token_env")
                      else v)
                  for k, v in args.items()}
        return from_dict(cls, parsed, "serve args")

    def limits(self) -> UploadLimits:
        return UploadLimits(max_bytes=self.max_upload_bytes, min_side=self.min_side, max_side=self.max_side)


def score_config(settings: ServeSettings, checkpoint_meta: Mapping[str, Any]) -> ScoreConfig:
    """The checkpoint's own score settings with the serve overrides; per-draw errors are not kept online."""
    base = dict((checkpoint_meta.get("config") or {}).get("score") or {})
    for key in ("n_draws", "seed", "rule", "t_min", "t_max"):
        if getattr(settings, key) is not None:
            base[key] = getattr(settings, key)
    base.update(store_draws=False, device=settings.device, num_threads=settings.num_threads, limit=0)
    return from_dict(ScoreConfig, base, "score")


def explain_config(settings: ServeSettings, checkpoint_meta: Mapping[str, Any], seed: int) -> ExplainConfig:
    base = dict((checkpoint_meta.get("config") or {}).get("explain") or {})
    for key in ("t_start", "steps", "guidance"):
        value = getattr(settings, f"explain_{key}")
        if value is not None:
            base[key] = value
    base["seed"] = seed
    return from_dict(ExplainConfig, base, "explain")


def serving_referral(settings: ServeSettings, checkpoint_meta: Mapping[str, Any]):
    """The referral of ``settings.referral`` (None without one); ResultsError when it was calibrated for another
    model_id than the checkpoint's."""
    if not settings.referral:
        return None
    from meddiff.results.referral import check_model, read_referral

    referral = read_referral(settings.referral)
    check_model(referral, checkpoint_meta.get("model_id"))
    return referral


class ImageClassifier:
    """One loaded checkpoint answering single-image requests (a Serve replica holds one)."""

    def __init__(self, predictor, limits: UploadLimits, explain_cfg: ExplainConfig | None = None,
                 checkpoint: str | None = None, referral=None) -> None:
        self.predictor = predictor
        self.referral = referral  # a meddiff.results.referral.Referral or None
        self.limits = limits
        self.explain_cfg = explain_cfg
        self.checkpoint = checkpoint
        self._counterfactuals = None

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> "ImageClassifier":
        from meddiff.bundle import read_bundle
        from meddiff.methods import get_method, load_predictor

        meta = read_bundle(settings.checkpoint).metadata
        cfg = score_config(settings, meta)
        predictor = load_predictor(settings.checkpoint, cfg)
        method = get_method(predictor.method)
        explain = explain_config(settings, meta, cfg.seed) if method.counterfactual else None
        # the upload check refuses from the header what the checkpoint's decoder would refuse (its data.max_pixels)
        limits = dataclasses.replace(settings.limits(), max_pixels=predictor.decoder.max_pixels)
        return cls(predictor, limits, explain, settings.checkpoint, serving_referral(settings, meta))

    # --- requests -------------------------------------------------------------------------------------------------

    def decode(self, data: bytes) -> tuple[torch.Tensor, ImageInfo]:
        """Check an upload and decode it exactly as batch scoring does: [channels, size, size] in [-1, 1]."""
        info = inspect_image(data, self.predictor.decoder.channels, self.limits)
        try:
            return self.predictor.decoder.decode_bytes(data, "the uploaded image"), info
        except DataError as exc:
            raise UploadError(422, str(exc)) from None

    def predict(self, pixels: Sequence[torch.Tensor], ids: Sequence[str]) -> list[dict[str, Any]]:
        """B decoded images and their ids -> B JSON-able prediction dicts (one predictor call for the batch)."""
        rows = self.predictor.predict_pixels(torch.stack(list(pixels)), list(ids))
        return [self.response(row, image_id) for row, image_id in zip(rows, ids)]

    def response(self, row: Mapping[str, Any], image_id: str) -> dict[str, Any]:
        """A results row (``results.schema`` columns) as the endpoint's JSON."""
        names = self.class_names
        per_class = lambda values: None if values is None else {n: v for n, v in zip(names, values)}
        return {
            "image_id": image_id,
            "class": row[S.PRED],
            "class_name": row[S.PRED_NAME],
            "votes": per_class(row[S.VOTES]),
            "prob": per_class(row[S.PROB]),
            "uncertainty": None if row[S.UNCERTAINTY] is None else row[S.UNCERTAINTY] + 0.0,  # no -0.0
            "n_draws": row[S.N_DRAWS],
            "nfe": row[S.NFE],
            "pred_vote": row[S.PRED_VOTE],
            "pred_average": row[S.PRED_AVERAGE],
            "mean_error": per_class(row[S.MEAN_ERROR]),
            "rule": row[S.RULE],
            "method": row[S.METHOD],
            "seed": row[S.SEED],
            "model_id": row[S.MODEL_ID],
            **self._decision(row),
        }

    def _decision(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """decision (accept / refer), alpha, delta and threshold of the referral, when the endpoint has one."""
        if self.referral is None:
            return {}
        f = self.referral.fields(row[S.UNCERTAINTY])
        return {"decision": f[S.DECISION], "risk_alpha": f[S.RISK_ALPHA], "risk_delta": f[S.RISK_DELTA],
                "refer_threshold": f[S.REFER_THRESHOLD], "referral_rule": self.referral.rule}

    def explain(self, pixels: torch.Tensor, image_id: str) -> dict[str, Any]:
        """Counterfactuals of one image under every class: a PNG strip (input, reconstruction per class, difference
        map per class; see ``meddiff.explain.render``) as base64, with the reconstruction errors and the settings."""
        from meddiff.explain import render
        from meddiff.methods import counterfactual_loader

        if self.explain_cfg is None:
            raise UploadError(400, f"explain=true needs a method with counterfactuals; this one is a "
                                   f"{self.predictor.method!r} model; call /predict without explain")
        cfg = self.explain_cfg
        if self._counterfactuals is None:  # the method's sampler (registry), over the model the predictor holds
            load = counterfactual_loader(self.predictor.method, str(self.checkpoint))
            self._counterfactuals = load(self.checkpoint, cfg, self.predictor.device,
                                         model=self.predictor.generative_model)
        result = self._counterfactuals(pixels[None], [image_id])
        names = self.class_names
        image, recons = result.inputs[0], result.reconstructions[0]
        vmax = render.difference_scale(recons - image[None])
        tiles = [render.to_uint8(image)] + [render.to_uint8(r) for r in recons]
        tiles += [render.difference_rgb(r - image, vmax) for r in recons]
        return {
            "png_base64": base64.b64encode(_strip_png(tiles)).decode("ascii"),
            "layout": ["input"] + [f"reconstruction:{names[c]}" for c in result.classes]
                      + [f"difference:{names[c]}" for c in result.classes],
            "reconstruction_error": {names[c]: float(result.errors[0, j]) for j, c in enumerate(result.classes)},
            "difference_mode": render.difference_mode(image.shape[0]),
            "difference_scale": vmax,
            "t_start": cfg.t_start, "steps": cfg.steps, "guidance": cfg.guidance, "seed": cfg.seed,
        }

    # --- model --------------------------------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.predictor.class_names)

    def model_card(self) -> dict[str, Any]:
        """The checkpoint's metadata.json and how this endpoint scores with it."""
        return {
            "metadata": self.predictor.metadata,
            "serving": {
                "score_config": dataclasses.asdict(self.predictor.cfg),
                "explain_config": None if self.explain_cfg is None else dataclasses.asdict(self.explain_cfg),
                "limits": dataclasses.asdict(self.limits),
                "referral": None if self.referral is None else self.referral.record(),
                "image_id_rule": "the 'id' form field or query parameter if given, else 'sha256:' + sha256 of the "
                                 "image file's bytes; the noise of an image is seeded by (seed, image id)",
            },
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model_id": self.predictor.model_id, "method": self.predictor.method,
                "classes": list(self.class_names)}


def _strip_png(tiles: list[np.ndarray]) -> bytes:
    """Tiles (uint8 [H, W] or [H, W, 3], same size) side by side with a 4-pixel white gutter, enlarged, as PNG bytes."""
    from meddiff.explain.render import enlarge

    rgb = [np.repeat(t[..., None], 3, axis=-1) if t.ndim == 2 else t for t in tiles]
    rgb = [enlarge(t) for t in rgb]
    h = rgb[0].shape[0]
    gutter = np.full((h, 4, 3), 255, dtype=np.uint8)
    parts = [p for t in rgb for p in (t, gutter)][:-1]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(parts, axis=1)).save(buf, format="PNG")
    return buf.getvalue()

