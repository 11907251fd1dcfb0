"""Which hardware core runs a model: the ``--arch`` choice every command shares.

Three cores: ``core`` (:class:`hw.core.DeltaCore`, event-driven, memories, dense layers,
discrete and continuous actions, :class:`pysim.corecycles.CoreCycleModel`), ``seq``
(:class:`hw.seqtop.DeltaSeqTop`, sequential, memories, conv2d and dense layers, discrete
actions, :class:`pysim.seqcycles.SeqCycleModel`) and ``parallel`` (:class:`hw.top.DeltanetTop`,
registers, dense layers, :class:`pysim.CycleModel`). ``auto`` picks ``seq`` for a model with a
conv layer, else ``core``.
"""

from __future__ import annotations

from pysim import CycleModel, Model
from pysim.corecycles import CoreCycleModel
from pysim.seqcycles import SeqCycleModel

__all__ = ["ARCHS", "ARCH_HELP", "ARCH_NAMES", "add_arch_arguments", "check_obs_words",
           "choose_arch", "cycle_model", "resolve_arch"]

ARCHS = ("auto", "core", "parallel", "seq")
#: how the commands name each core in their output
ARCH_NAMES = {"core": "event-driven core", "parallel": "parallel core", "seq": "seq core"}
ARCH_HELP = ("hardware core: core (event-driven, memories, dense layers; deltanet_core), seq "
             "(sequential, memories, conv2d + dense, discrete actions; deltanet_seq), parallel "
             "(registers, dense layers only; deltanet_top) or auto (default: seq when the model "
             "has a conv layer, else core)")


def add_arch_arguments(p) -> None:
    """``--arch`` and ``--obs-words``, the same for every command that builds a core."""
    p.add_argument("--arch", choices=ARCHS, default="auto", help=ARCH_HELP)
    p.add_argument("--obs-words", type=int, default=None,
                   help="core and seq: observation codes per write (default: core "
                        "min(inputs, 8), seq 8)")


def choose_arch(model: Model, arch: str = "auto") -> str:
    """``auto`` -> ``seq`` for models with a conv layer, else ``core``; refuse conv layers on
    the dense-only cores with a clear message."""
    if arch not in ARCHS:
        raise ValueError(f"--arch must be one of {ARCHS}, got {arch!r}")
    has_conv = any(ly.kind != "dense" for ly in model.config.layers)
    if arch == "auto":
        return "core"
    if arch == "parallel" and has_conv:
        raise ValueError(f"{model.meta.get('path', 'model')}: the {ARCH_NAMES[arch]} runs "
                         "dense layers only; this model has conv2d layers (use --arch seq)")
    return arch


def resolve_arch(model: Model, arch: str = "auto") -> str:
    """:func:`choose_arch`, also refusing continuous actions on the seq core."""
    arch = choose_arch(model, arch)
    dec = model.config.decoder.kind
    if arch == "seq" and dec != "argmax":
        raise ValueError(f"--arch seq: the sequential core (DeltaSeqTop) is for discrete-action "
                         f"policies (argmax decoder); this model's decoder is {dec!r} (use "
                         f"--arch core or auto)")
    return arch


def check_obs_words(model: Model, arch: str, obs_words: int | None) -> int | None:
    """The observation word of ``arch`` (:func:`sim.runner.default_obs_words` when None),
    validated with a clear message."""
    from sim.runner import default_obs_words

    if obs_words is not None and (isinstance(obs_words, bool) or not isinstance(obs_words, int)
                                  or obs_words < 1):
        raise ValueError(f"--obs-words must be an integer >= 1, got {obs_words!r}")
    return default_obs_words(model, arch, obs_words)


def cycle_model(model: Model, lanes: int, arch: str, obs_words: int | None = None):
    """The cycle model of ``arch`` (validates ``lanes`` and ``obs_words`` with a clear
    message)."""
    if arch == "core":
        return CoreCycleModel(model, lanes, obs_words)
    if arch == "seq":
        return SeqCycleModel(model, lanes)
    return CycleModel(model, lanes)
