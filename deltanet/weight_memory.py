"""Weight-memory bits of a model: dense float32 vs compressed fixed point (issue 12, part 5).

Three figures per layer and for the whole model (weights only; biases, thresholds and the
examination memories are not counted):

* ``dense_bits``  - every weight of the unpruned layer at float32: ``weights x 32`` (the layer
  as trained: before a structural clean-up, :func:`deltanet.cleanup.dense_weights`);
* ``raw_bits``    - the non-zero weights at the layer's weight width, no index:
  ``nnz x weight_fmt.width`` (the lower bound of any sparse format);
* ``hw_bits``     - what the event-driven core stores (:mod:`pysim.coreplan`): every column
  takes ``col_len = max over lanes of the lane slice's non-zeros`` words in each of the ``L``
  lanes, and a word carries ``valid | accumulator address | weight``, so a layer holds
  ``sum(col_len) x L`` words of ``CorePlan.word_width`` bits (one width for the whole core: the
  widest weight format and the deepest accumulator bank). The overhead over ``raw_bits`` is the
  accumulator address and valid bit of every word plus the padding words of lanes with fewer
  non-zeros than the busiest lane of a column. The column table / keys (start and length of
  every column) are not counted.

Non-zero means non-zero in fixed point (``Model.w_raw != 0``): on a float artifact whose
formats are still placeholders (not quantized) the figures use those placeholders and say so
(``quantized: false``).
"""

from __future__ import annotations

from deltanet.pysim import Model
from deltanet.pysim.coreplan import CorePlan

from .cleanup import dense_weights

#: bits of one dense float32 weight
FLOAT_BITS = 32
#: the core the hardware figure is given for (MAC lanes; observation codes per intake word)
LANES = 4
OBS_WORDS = 8


def weight_memory(model: Model, lanes: int = LANES, obs_words: int | None = None) -> dict:
    """Per layer and in total: weights, non-zeros, weight bits and the three bit counts (see
    the module doc), with the reductions ``dense_bits / raw_bits`` and ``dense_bits /
    hw_bits``."""
    cfg = model.config
    obs_words = obs_words or min(cfg.n_in, OBS_WORDS)
    plan = CorePlan.build(model, lanes, obs_words)
    layers = []
    trained = dense_weights(model)
    for i, ly in enumerate(cfg.layers):
        total = int(trained[i])
        nnz = int((model.w_raw[i] != 0).sum())
        words = int(plan.col_len[i].sum()) * lanes
        layers.append({
            "layer": i, "weights": total, "nonzero": nnz,
            "weight_bits": ly.weight_fmt.width, "dense_bits": total * FLOAT_BITS,
            "raw_bits": nnz * ly.weight_fmt.width, "hw_words": words,
            "hw_bits": words * plan.word_width,
        })
    tot = {k: sum(r[k] for r in layers)
           for k in ("weights", "nonzero", "dense_bits", "raw_bits", "hw_words", "hw_bits")}
    return {
        "lanes": lanes, "obs_words": obs_words, "word_bits": plan.word_width,
        "quantized": "quantization" in model.meta.get("provenance", {}),
        **tot,
        "raw_reduction": tot["dense_bits"] / tot["raw_bits"] if tot["raw_bits"] else None,
        "hw_reduction": tot["dense_bits"] / tot["hw_bits"] if tot["hw_bits"] else None,
        "per_layer": layers,
        "overhead_model": (f"hardware: sum over columns of col_len x {lanes} lanes words of "
                           f"{plan.word_width} bits (valid | acc address | weight); raw: "
                           "non-zero weights x weight bits; dense: all weights x 32 "
                           "(float32)"),
    }


def kbits(bits: int) -> str:
    """``bits`` in a short human unit (bits, kbit, Mbit)."""
    if bits < 10_000:
        return f"{bits:,} bit"
    if bits < 10_000_000:
        return f"{bits / 1e3:,.1f} kbit"
    return f"{bits / 1e6:,.2f} Mbit"


def summary_line(mem: dict) -> str:
    """One line for a report: dense vs raw vs hardware weight memory."""
    note = "" if mem["quantized"] else " (placeholder formats: not quantized yet)"

    def red(v):
        return f"{v:,.1f}x" if v else "inf"

    return (f"weight memory: dense float32 {kbits(mem['dense_bits'])}; compressed "
            f"{mem['nonzero']:,} non-zero weights = {kbits(mem['raw_bits'])} raw "
            f"({red(mem['raw_reduction'])}), {kbits(mem['hw_bits'])} in the core's "
            f"{mem['lanes']}-lane column words of {mem['word_bits']} bits "
            f"({red(mem['hw_reduction'])}){note}")
