"""Defined behaviour at the edges: one domain, an all-zero domain, missing domains, bad input, NaN/Inf."""

from __future__ import annotations

import json

import pytest
import torch

from mgs.surgery import METHODS, StackedGrads, resolve
from surgery_helpers import conflicting_grads, stack


def test_one_domain_is_identity():
    grads = {"math": conflicting_grads(1, seed=0)["math"]}
    for method in METHODS.names():
        combined, stats = resolve(grads, method=method)
        for name, tensor in combined.items():
            assert torch.equal(tensor, grads["math"][name])
        assert stats.summary() == {"surgery/groups_conflicted_frac": 0.0, "surgery/finite": 1.0}


def test_all_zero_domain_is_never_projected_on():
    grads = conflicting_grads(3, seed=4)
    grads["if"] = {n: torch.zeros_like(t) for n, t in grads["if"].items()}
    combined, stats = resolve(grads, domains=["math", "chat", "if"])
    two, _ = resolve({d: grads[d] for d in ("math", "chat")}, domains=["math", "chat"])
    for name in combined:
        torch.testing.assert_close(combined[name], two[name], atol=1e-12, rtol=1e-12)
    for info in stats.weights.infos:
        assert all(2 not in pair for pair in info["projections"])
    record = json.loads(json.dumps(stats.to_dict(), allow_nan=False))
    assert all(g["cos"]["chat__if"] == 0.0 and g["norms"]["if"] == 0.0 for g in record["groups"])
    assert stats.summary()["surgery/norm_ratio/chat__if"] == float("inf")


def test_missing_expected_domain_is_a_clear_error():
    grads = conflicting_grads(2, seed=0)
    with pytest.raises(ValueError, match=r"missing: \['if'\]"):
        resolve(grads, domains=["math", "chat", "if"])
    with pytest.raises(ValueError, match="caller expects"):
        resolve(stack(grads, ["math", "chat"]), domains=["chat", "math"])


def test_mismatched_names_and_shapes_name_the_parameter():
    grads = conflicting_grads(2, seed=0)
    del grads["chat"]["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        resolve(grads)
    grads = conflicting_grads(2, seed=0)
    grads["math"]["model.norm.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"'model\.norm\.weight'.*\(3,\)"):
        resolve(grads)
    with pytest.raises(ValueError, match=r"expected \[D=2"):
        StackedGrads(["a", "b"], {"w": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="parameters in no group"):
        resolve(conflicting_grads(2), groups={"g": ["model.norm.weight"]})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_is_flagged_or_raised(bad):
    grads = conflicting_grads(2, seed=1)
    grads["chat"]["model.layers.0.mlp.up_proj.weight"][0, 0] = bad
    combined, stats = resolve(grads)
    assert stats.finite is False and stats.summary()["surgery/finite"] == 0.0
    assert stats.weights.finite.count(False) == 1
    bad_group = stats.group_names[stats.weights.finite.index(False)]
    assert bad_group == "layers.0.mlp"
    assert not torch.isfinite(combined["model.layers.0.mlp.up_proj.weight"]).all()
    json.dumps(stats.to_dict(), allow_nan=False)  # stays strict JSON
    with pytest.raises(FloatingPointError, match="layers.0.mlp"):
        resolve(grads, on_nonfinite="raise")


def test_unknown_method_lists_the_choices():
    with pytest.raises(KeyError, match=r"choose from \['pcgrad', 'sum'\]"):
        resolve(conflicting_grads(2), method="mgda")


def test_output_buffer_of_wrong_size_names_the_parameter():
    grads = conflicting_grads(2, seed=0)
    stacked = stack(grads, sorted(grads))
    with pytest.raises(ValueError, match=r"'model\.norm\.weight'.*8 elements"):
        resolve(stacked, out={"model.norm.weight": torch.zeros(3)})
