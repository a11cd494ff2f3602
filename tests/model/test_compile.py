"""torch.compile: the pretraining forward (encoder, both heads, pooling) traces as one graph."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from sigcell.model import MaskedExpressionModel

from .test_cell_objective import config, masked_cells

CASES = {  # (value encoding, pooling, cell objective)
    "binned-cls": ("binned", "cls", "mvc"),
    "continuous-mean": ("continuous", "mean", "mvc"),
    "rank-mean": ("rank", "mean", "mvc"),
    "binned-none": ("binned", "cls", "none"),
    "binned-profile": ("binned", "cls", "profile"),
    "rank-profile-packed": ("rank", "mean", "profile"),
}


@pytest.mark.parametrize("attention", ["softmax", "sigmoid"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case", list(CASES))
def test_pretraining_forward_has_no_graph_break(attention, packed, case):
    encoding, pooling, objective = CASES[case]
    cfg = config(encoding, attention, pooling=pooling, cell_objective=objective)
    torch.manual_seed(0)
    model = MaskedExpressionModel(cfg)
    batch = masked_cells(cfg, 3, packed)
    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(model)(batch)
    finally:
        torch._dynamo.reset()
    reasons = [f"{r.reason.splitlines()[0]} at {r.user_stack[-1] if r.user_stack else '?'}"
               for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_compiled_forward_matches_eager(packed):
    cfg = config("binned", pooling="mean")
    torch.manual_seed(1)
    model = MaskedExpressionModel(cfg)
    batch = masked_cells(cfg, 4, packed)
    eager = model(batch)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend="eager", fullgraph=True)(batch)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(compiled.loss_sum, eager.loss_sum)
    torch.testing.assert_close(compiled.parts, eager.parts)
    assert int(compiled.n_masked) == int(eager.n_masked)
