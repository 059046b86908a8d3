"""The decision rules as data: how a diffusion classifier turns its per-draw errors into a class (classification
rules) and when an image may stop drawing noise (stopping rules).

Each rule is one entry below, with its name (the config value), the results column it fills, a title for reports
and the dashboard, and what it guarantees. Config validation (``score.rule``, ``score.stopping``), the CLI choices,
the metrics, the report and the dashboard read them from here, so adding a rule is one entry here plus its function
(``meddiff.diffusion.stopping`` for a stopping rule, ``meddiff.report.ablation.weighted_rules`` for a replayed
classification rule) and its test. This module imports nothing heavy: reading a config never imports torch.

Classification rules (Favero et al. 2025, section 3; Li et al. 2023 for the average):
  vote        each draw k votes for argmin_c error[c, k]; most votes wins, ties go to the lower mean error.
  average     argmin_c of the mean error over draws (its error target is ``score.error_target``: eps, x or v;
              the report calls it "average (eps)" / "average (x)").
  normalised  a diagnostic the report replays from stored draws (every draw's errors rescaled to the same size);
              scoring does not produce it.
Stopping rules: see ``STOPPING_RULES`` and the proofs in ``meddiff.diffusion.stopping``.
Referral rules (when to refer an image to a clinician): see ``REFERRAL_RULES`` and ``meddiff.results.referral``.
"""

from __future__ import annotations

from dataclasses import dataclass

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class ClassificationRule:
    """name: ``score.rule`` value and report key; column: the results column holding its prediction (None: only
    replayed from stored per-draw errors by the report); title: how reports and the dashboard name it; scoring: whether
    ``meddiff score`` can produce it (a ``score.rule`` choice); summary: one line on what it decides; scores: the
    results column its per-class ROC scores come from (``prob``: vote shares; ``mean_error``: negated errors)."""

    name: str
    column: str | None
    title: str
    scoring: bool
    summary: str
    scores: str = "mean_error"


@dataclass(frozen=True)
class StoppingRule:
    """name: ``score.stopping`` value; test: ``"module:function"`` of its stopping test (votes [B, C], draws [B],
    n_max, delta, chunk) -> [B] bool; anytime_valid: whether its guarantee holds whatever the number of looks;
    guarantee: what a user may rely on, in one sentence; uses_referral: whether it also stops on the referral
    decision, so it needs the referral threshold (``score.referral``)."""

    name: str
    test: str
    anytime_valid: bool
    guarantee: str
    uses_referral: bool = False


CLASSIFICATION_RULES: dict[str, ClassificationRule] = {r.name: r for r in (
    ClassificationRule("vote", "pred_vote", "majority vote", True,
                       "most draws whose lowest error is the class; ties go to the lower mean error (Favero et al.)",
                       scores="prob"),
    ClassificationRule("average", "pred_average", "average", True,
                       "lowest mean error over the draws, for score.error_target (Li et al.)"),
    ClassificationRule("normalised", None, "normalised average", False,
                       "lowest mean of per-draw errors divided by their mean over classes (report diagnostic)"),
)}

_STOP = "meddiff.diffusion.stopping"
STOPPING_RULES: dict[str, StoppingRule] = {r.name: r for r in (
    StoppingRule("none", f"{_STOP}:no_early_stop", True, "every image uses all N draws: the full-N vote itself"),
    StoppingRule("exact", f"{_STOP}:exact_rule", True,
                 "stops only when the remaining draws cannot change the leader: always equals the full-N vote on the "
                 "same noise"),
    StoppingRule("wilson", f"{_STOP}:wilson_stop", True,
                 "P(stopping on a class other than the vote-share limit's leader) <= delta, by a union bound over the "
                 "planned looks"),
    StoppingRule("wilson_per_look", f"{_STOP}:wilson_per_look_stop", False,
                 "delta is a per-look error rate only: under repeated looks the chance of stopping on a wrong leader "
                 "is many times delta (for comparison with the literature)"),
    StoppingRule("hoeffding", f"{_STOP}:hoeffding_stop", True,
                 "P(stopping on a wrong leader) <= delta at every draw count simultaneously (Hoeffding, union over n)"),
    StoppingRule("mixture", f"{_STOP}:mixture_stop_rule", True,
                 "P(stopping on a wrong leader) <= delta under continuous monitoring and any stopping time "
                 "(Robbins' mixture martingale, Ville's inequality)"),
    StoppingRule("futility", f"{_STOP}:futility_stop", True,
                 "P(stopping on a wrong leader, or stopping as refer while the limit vote entropy is at or below the "
                 "referral threshold) <= delta under continuous monitoring and any stopping time (the mixture leader "
                 "test and a Beta-mixture confidence sequence, delta / 2 each)", uses_referral=True),
)}


@dataclass(frozen=True)
class ReferralRule:
    """name: ``meddiff calibrate --rule`` value; choose: ``"module:function"`` (uncertainty, correct, alpha, delta)
    -> a ``meddiff.results.referral.Threshold``; certified: whether it carries a finite-sample guarantee;
    guarantee: what a user may rely on, in one sentence."""

    name: str
    choose: str
    certified: bool
    guarantee: str


_REF = "meddiff.results.referral"
REFERRAL_RULES: dict[str, ReferralRule] = {r.name: r for r in (
    ReferralRule("ltt", f"{_REF}:ltt_threshold", True,
                 "P(error rate among accepted images > alpha) <= delta over the calibration set (Learn then Test: "
                 "exact binomial p-values, fixed-sequence testing from the most confident threshold)"),
    ReferralRule("ltt-multistart", f"{_REF}:ltt_multistart_threshold", True,
                 "P(error rate among accepted images > alpha) <= delta over the calibration set (Learn then Test: "
                 "fixed-sequence chains from uncertainty 0, 0.2, 0.4, 0.6, 0.8 at delta / 5 each, Bonferroni across "
                 "chains); more power than ltt when the most confident images include an error"),
    ReferralRule("naive", f"{_REF}:naive_threshold", False,
                 "none: the largest threshold whose calibration error rate is <= alpha; its true risk exceeds alpha "
                 "about half the time (for comparison)"),
)}


def referral_rule(name: str) -> ReferralRule:
    if name not in REFERRAL_RULES:
        raise ConfigError(f"referral rule: unknown rule {name!r}; choose one of {tuple(REFERRAL_RULES)}")
    return REFERRAL_RULES[name]


def scoring_rules() -> tuple[str, ...]:
    """The classification rules ``meddiff score`` can produce (``score.rule`` choices)."""
    return tuple(name for name, r in CLASSIFICATION_RULES.items() if r.scoring)


def classification_rule(name: str) -> ClassificationRule:
    if name not in CLASSIFICATION_RULES:
        raise ConfigError(f"rule: unknown classification rule {name!r}; known rules are {sorted(CLASSIFICATION_RULES)}")
    return CLASSIFICATION_RULES[name]


def stopping_rule(name: str) -> StoppingRule:
    if name not in STOPPING_RULES:
        raise ConfigError(f"stopping: unknown stopping rule {name!r}; choose one of {tuple(STOPPING_RULES)}")
    return STOPPING_RULES[name]
