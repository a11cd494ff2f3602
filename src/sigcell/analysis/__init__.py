"""Analyses of attention: stability stress tests, attention Jacobians and attention sinks.

Modules are imported lazily by the CLI; ``stress`` needs only torch, numpy and pyyaml (it runs on bare GPU
machines), plots need matplotlib and are made separately from the JSON results.
"""

from sigcell.analysis.divergence import DivergenceDetector, Verdict
from sigcell.analysis.jacobian import (
    attention_weight_jacobian,
    jacobian_metrics,
    sigmoid_jacobian,
    softmax_jacobian,
)
from sigcell.analysis.sinks import first_token_shares, sink_rate

__all__ = [
    "DivergenceDetector",
    "Verdict",
    "attention_weight_jacobian",
    "first_token_shares",
    "jacobian_metrics",
    "sigmoid_jacobian",
    "sink_rate",
    "softmax_jacobian",
]
