"""The method registry (ground floor, so that a config can name a method without importing it): the config string ``method`` picks a training loop, and a checkpoint's metadata ``kind`` picks
the predictor that scores it (batch scoring, Ray Data actors, the Serve endpoint, ``meddiff explain`` and the benchmark
all go through it).

Every method is one package ``meddiff.methods.<name>`` whose ``__init__`` registers it once::

    register(Method("toy", train="meddiff.methods.toy.train:train_toy",
                    predictor="meddiff.methods.toy.predictor:ToyPredictor", votes=False, description="..."))

(the pattern of timm's ``@register_model``). Entries name their objects as ``"module:attribute"`` strings, imported on
first use, so reading a config never imports torch, diffusers or timm; a package's ``__init__`` therefore imports
nothing heavy. ``discover`` imports every subpackage of ``meddiff.methods`` and the modules named in the environment
variable ``MEDDIFF_METHODS`` (comma-separated; methods kept outside this repository).

A training function has the signature ``train(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path | None``
(the bundle on rank 0); a predictor class subclasses ``meddiff.methods.predictor.Predictor``; a counterfactual
loader (optional) is described in ``meddiff.methods.explainer``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from typing import Any

from meddiff.errors import CheckpointError, ConfigError

PLUGINS_ENV = "MEDDIFF_METHODS"


@dataclass(frozen=True)
class Method:
    """name: the config ``method`` string and the checkpoint ``kind``; train / predictor / counterfactual:
    ``"module:attribute"`` references; votes: whether its rows carry majority votes over noise draws
    (pred_vote/pred_average/votes), which the vote-vs-average ablations need; counterfactual: the sampler factory
    ``meddiff explain`` uses, or None when the method cannot re-generate an image under another class (and
    counterfactual_note says why); short: its name in report tables (default: name); sizing: the function that builds
    the method's networks at full size for ``meddiff plan`` / ``meddiff prove`` (``meddiff.methods.sizing``), or None."""

    name: str
    train: str
    predictor: str
    votes: bool
    description: str
    counterfactual: str | None = None
    counterfactual_note: str = ""
    short: str = ""
    sizing: str | None = None

    def __post_init__(self) -> None:
        if not self.short:
            object.__setattr__(self, "short", self.name)


METHODS: dict[str, Method] = {}
_discovered = False


def register(method: Method) -> Method:
    """Add ``method`` to the registry (once per name: a second, different entry is an error)."""
    known = METHODS.get(method.name)
    if known is not None and known != method:
        raise ConfigError(f"method {method.name!r} is registered twice ({known.train} and {method.train})")
    METHODS[method.name] = method
    return method


def discover() -> dict[str, Method]:
    """Import every method package (each registers itself) and the plug-in modules of ``$MEDDIFF_METHODS``."""
    global _discovered
    if not _discovered:
        package = importlib.import_module("meddiff.methods")
        for info in pkgutil.iter_modules(package.__path__):
            if info.ispkg:
                importlib.import_module(f"{package.__name__}.{info.name}")
        _discovered = True
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"${PLUGINS_ENV}: cannot import method module {module!r}: {e}") from e
    return METHODS


def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names (imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_method(name: str) -> Method:
    methods = discover()
    if name not in methods:
        raise ConfigError(f"method: unknown method {name!r}; known methods are {sorted(methods)}")
    return methods[name]


def train_function(name: str):
    """The training loop of method ``name``."""
    return resolve(get_method(name).train)


def predictor_class(kind: str, where: str = "checkpoint"):
    """The predictor class for a checkpoint whose metadata ``kind`` is ``kind``."""
    methods = discover()
    if kind not in methods:
        raise CheckpointError(f"{where}: checkpoint kind {kind!r} has no predictor; known kinds are {sorted(methods)}")
    return resolve(methods[kind].predictor)
