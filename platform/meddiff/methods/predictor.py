"""The predictor interface every method implements, shared by batch scoring (in-process or Ray Data actors), the
Serve endpoint and the benchmark.

A predictor holds a loaded model and turns manifest rows (or raw pixel batches) into results rows that follow
``meddiff.results.schema``. Each method's predictor (``meddiff.methods.<name>.predictor``) subclasses ``Predictor``;
``meddiff.methods.load_predictor`` picks the one a checkpoint's metadata ``kind`` asks for. Predictors are plain Python
objects: Ray wraps them, they never import Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from meddiff.config import ScoreConfig
from meddiff.data import ImageDecoder
from meddiff.device import autocast_dtype, resolve_device, set_threads
from meddiff.diffusion.engine import EngineSpec
from meddiff.diffusion.noise import DrawScheme
from meddiff.diffusion.streaming import ImageResult, StreamSpec
from meddiff.diffusion.uncertainty import probability_entropy, vote_share
from meddiff.models.baseline_model import BaselineModel
from meddiff.provenance import code_version
from meddiff.rules import classification_rule, stopping_rule
from meddiff.results import schema as S


def draw_scheme(cfg: ScoreConfig) -> DrawScheme:
    """The layout of an image's draws that ``score.t_draws`` / ``strata`` / ``antithetic`` ask for."""
    return DrawScheme(t_draws=cfg.t_draws, strata=cfg.strata, antithetic=cfg.antithetic)


def engine_spec(cfg: ScoreConfig, device: torch.device, num_classes: int, schedule, time_kind: str,
                channels_last: bool) -> EngineSpec:
    """The engine settings of a diffusion-style predictor from its score config."""
    return EngineSpec(num_classes=num_classes, schedule=schedule, time_kind=time_kind, error_target=cfg.error_target,
                      t_min=cfg.t_min, t_max=cfg.t_max,
                      max_batch=cfg.max_batch or (256 if device.type == "cpu" else 2048),
                      autocast_dtype=autocast_dtype(device, cfg.precision), channels_last=channels_last,
                      draws=draw_scheme(cfg))


def stream_spec(cfg: ScoreConfig) -> StreamSpec:
    """The early-exit settings from a score config; a rule that stops on the referral decision gets the threshold of
    ``score.referral`` (a referral that refers everything: -inf, every image settles as refer at once)."""
    refer_above = None
    if stopping_rule(cfg.stopping).uses_referral:
        from meddiff.results.referral import read_referral

        threshold = read_referral(cfg.referral).threshold
        refer_above = float("-inf") if threshold is None else float(threshold)
    return StreamSpec(n_draws=cfg.n_draws, rule=cfg.stopping, delta=cfg.delta, chunk=cfg.chunk_draws,
                      slots=cfg.batch_size, refer_above=refer_above, decision_z=cfg.decision_z)


class Predictor:
    """What every predictor shares: the loaded model (``self.model`` with class_names, model_id, metadata), the score
    config, the device, the decoder, and ``predict_rows`` over manifest rows. Subclasses set ``method`` (the checkpoint
    kind), ``_load`` (path, device -> model) and implement ``predict_pixels``."""

    method = ""

    @staticmethod
    def _load(path: str | Path, device: torch.device):
        raise NotImplementedError

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: ScoreConfig):
        set_threads(cfg.num_threads)
        device = resolve_device(cfg.device)
        return cls(cls._load(path, device), cfg, device)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def metadata(self) -> dict[str, Any]:
        """The checkpoint's metadata.json (empty for a model that was never saved)."""
        return self.model.metadata or {}

    @property
    def generative_model(self):
        """The loaded model a counterfactual sampler of this method can reuse (``meddiff.methods.explainer``), so an
        endpoint that explains does not load its checkpoint twice; None: load it from the checkpoint."""
        return self.model

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def predict_rows(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score manifest rows (id, label, split, source, path, ...); undecodable rows become error rows."""
        return predict_manifest_rows(self, rows)

    def probability_rows(self, prob: torch.Tensor, nfe: int | Sequence[int]) -> list[dict[str, Any]]:
        """Results rows of a classifier that outputs class probabilities ([B, C]; softmax or label-chain counts):
        argmax prediction, normalised entropy as the uncertainty, ``nfe`` network evaluations per image; the vote
        columns, ``n_draws`` and ``rule`` stay null."""
        prob = prob.float().cpu()
        uncertainty = probability_entropy(prob)
        pred = prob.argmax(dim=-1)
        nfes = [nfe] * len(prob) if isinstance(nfe, int) else list(nfe)
        rows = []
        for b in range(len(prob)):
            p = int(pred[b])
            rows.append({
                S.PRED: p, S.PRED_NAME: self.class_names[p], S.PRED_VOTE: None, S.PRED_AVERAGE: None, S.VOTES: None,
                S.PROB: prob[b].tolist(), S.MEAN_ERROR: None, S.UNCERTAINTY: float(uncertainty[b]), S.N_DRAWS: None,
                S.NFE: int(nfes[b]), S.METHOD: self.method, S.RULE: None, S.MODEL_ID: self.model_id,
                S.SEED: self.cfg.seed, S.STATUS: S.STATUS_OK, S.CODE_VERSION: self._code_version,
            })
        return rows

    def vote_row(self, res: ImageResult) -> dict[str, Any]:
        """The results row of one image a voting classifier scored (``meddiff.diffusion.streaming``): both rules'
        predictions (``pred`` follows ``score.rule``), votes, vote shares, mean errors, vote-entropy uncertainty,
        draws and NFE (draws x classes), and the per-draw errors and t when ``score.store_draws``."""
        p = {S.PRED_VOTE: res.pred_vote, S.PRED_AVERAGE: res.pred_average}[classification_rule(self.cfg.rule).column]
        row = {
            S.PRED: p,
            S.PRED_NAME: self.class_names[p],
            S.PRED_VOTE: res.pred_vote,
            S.PRED_AVERAGE: res.pred_average,
            S.VOTES: res.votes.tolist(),
            S.PROB: vote_share(res.votes[None])[0].tolist(),
            S.MEAN_ERROR: res.mean_error.tolist(),
            S.UNCERTAINTY: res.uncertainty,
            S.N_DRAWS: res.n_draws,
            S.NFE: res.n_draws * self.model.num_classes,
            S.METHOD: self.method,
            S.RULE: self.cfg.rule,
            S.MODEL_ID: self.model_id,
            S.SEED: self.cfg.seed,
            S.STATUS: S.STATUS_OK,
            S.CODE_VERSION: self._code_version,
        }
        if self.cfg.store_draws:
            row[S.DRAW_ERRORS] = res.errors.tolist()
            row[S.DRAW_T] = res.t.tolist()
        return row


class NetworkPredictor(Predictor):
    """Scores images with a network that outputs class logits (``model.network``; the baselines, and the heads of
    methods that classify in one pass): softmax probabilities, argmax prediction, softmax entropy.

    One network evaluation per image (``nfe`` 1); the vote columns, ``n_draws`` and ``rule`` stay null.
    """

    def __init__(self, model: BaselineModel, cfg: ScoreConfig, device: torch.device | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.model.network.to(self.device).eval()
        self.decoder = ImageDecoder.for_model(model.image_size, model.channels, model.metadata)
        self.autocast_dtype = autocast_dtype(self.device, cfg.precision)
        self._code_version = code_version()

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, channels, image_size, image_size] in [-1, 1] -> float32 logits [B, num_classes] (on the CPU)."""
        x = pixels.to(self.device)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                return self.model.network(x).float().cpu()
        return self.model.network(x).float().cpu()

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch of decoded images.

        Args:
            pixels: [B, channels, image_size, image_size] in [-1, 1].
            ids: B image ids (unused by the network; kept for the interface).
        Returns: B dicts with the prediction columns of the results schema.
        """
        return self.probability_rows(torch.softmax(self.logits(pixels), dim=-1), 1)


def predict_manifest_rows(predictor, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decode manifest rows with ``predictor.decoder``, score the decodable ones with ``predictor.predict_pixels`` and
    return one results row per input row.

    One bad image never fails the batch: its row gets status "error" and the decoder's message. Every decoded row
    carries the decoder's note of what it did to the image (``preprocess``).
    """
    images, errors, notes = predictor.decoder.decode_batch_noted(rows)
    good = [i for i, e in enumerate(errors) if e is None]
    out = [{**identity_fields(row, predictor.class_names), S.PREPROCESS: note} for row, note in zip(rows, notes)]
    if good:
        preds = predictor.predict_pixels(images[good], [str(rows[i]["id"]) for i in good])
        for i, pred in zip(good, preds):
            out[i].update(pred)
    for i, err in enumerate(errors):
        if err is not None:
            out[i].update({S.STATUS: S.STATUS_ERROR, S.ERROR: err, S.METHOD: predictor.method,
                           S.MODEL_ID: predictor.model_id, S.SEED: predictor.cfg.seed,
                           S.CODE_VERSION: predictor._code_version})
    return out


def identity_fields(row: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """The columns that identify a manifest row: image id, label (-1 when unknown), label name, split, source, group
    (the image id when the row has none), metadata (JSON, "{}" when none) and cross-validation fold (null outside CV)."""
    label = row.get("label")
    label = -1 if label is None or label != label else int(label)
    group = row.get("group")
    fold = row.get("fold")
    return {
        S.GROUP: str(group) if isinstance(group, str) and group else str(row["id"]),
        S.METADATA: row.get("metadata") or "{}",
        S.FOLD: None if fold is None or fold != fold or int(fold) < 0 else int(fold),
        S.IMAGE_ID: str(row["id"]),
        S.LABEL: label,
        S.LABEL_NAME: class_names[label] if 0 <= label < len(class_names) else None,
        S.SPLIT: row.get("split"),
        S.SOURCE: row.get("source"),
    }
