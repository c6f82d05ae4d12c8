"""The batched methods and the fixed per-step cost: batched W == the per-group reference bit for bit, the
partition memo, and weights() whose number of tensor ops does not grow with the number of groups."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mgs.surgery import METHODS, resolve, weights
from mgs.surgery.partition import cached_partition
from surgery_helpers import conflicting_grads, llama_shapes

partition_module = sys.modules["mgs.surgery.partition"]  # (mgs.surgery.partition is also the function's name)
BATCHED_METHODS = [m for m in METHODS.names() if getattr(METHODS.get(m), "batched", None) is not None]


def _gramians(num_domains: int, num_groups: int, seed: int) -> torch.Tensor:
    """[G, D, D] float64 Gramians of random rows with many conflicts, plus the edge cases: a zero domain, an
    all-zero group, parallel / anti-parallel / orthogonal pairs, NaN and inf entries."""
    gen = torch.Generator().manual_seed(seed)
    grams = []
    for g in range(num_groups):
        rows = torch.randn(num_domains, 6, generator=gen, dtype=torch.float64)
        for k in range(1, num_domains):  # mix in earlier rows with random signs: many negative inner products
            rows[k] += (torch.rand(k, generator=gen, dtype=torch.float64) * 3 - 2) @ rows[:k]
        rows *= torch.rand(num_domains, 1, generator=gen, dtype=torch.float64) * 5 + 0.01
        kind = g % 12
        if kind == 1:
            rows[g % num_domains] = 0.0
        elif kind == 2:
            rows[:] = 0.0
        elif kind == 3 and num_domains > 1:
            rows[1] = -2.5 * rows[0]
        elif kind == 4 and num_domains > 1:
            rows[1] = 0.5 * rows[0]
        elif kind == 5 and num_domains > 1:
            rows[1] = 0.0
            rows[1, 0], rows[0, 0] = 1.0, 0.0  # orthogonal to row 0
        grams.append(rows @ rows.T)
    out = torch.stack(grams)
    if num_groups > 20:
        out[7, 0, -1] = float("nan")
        out[8, -1, -1] = float("inf")
        out[9, 0, 0] = float("-inf")
    return out


@pytest.mark.parametrize("method", BATCHED_METHODS)
@pytest.mark.parametrize("num_domains", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("seed, step", [(0, 0), (3, 7), (12345, 99)])
def test_batched_equals_per_group_bit_for_bit(method, num_domains, seed, step):
    grams = _gramians(num_domains, 240, seed=num_domains * 100 + step)
    fast = weights(grams, method, seed=seed, step=step)
    slow = weights(grams, method, seed=seed, step=step, batched=False)
    assert torch.equal(fast.matrices, slow.matrices)
    assert torch.equal(fast.coeffs, slow.coeffs)
    assert fast.finite == slow.finite and fast.finite.count(False) == 3
    assert list(fast.infos) == list(slow.infos)
    if method == "pcgrad" and num_domains > 1:  # the data must exercise what it checks
        projections = [len(info.get("projections", [])) for info in slow.infos]
        assert sum(p > 0 for p in projections) > 20 and projections.count(0) > 20
        assert not torch.equal(slow.matrices, torch.eye(num_domains, dtype=torch.float64).expand_as(slow.matrices))
        if num_domains > 2:  # orders differ between groups, and some row is projected more than once
            assert len({str(info.get("orders")) for info in slow.infos if "orders" in info}) > 1
            assert any(len(info["projections"]) > num_domains for info in slow.infos if "projections" in info)


def test_pcgrad_batched_uses_the_drawn_orders():
    """With 3 domains, a group whose result depends on the visiting order: the batched W equals the per-group W
    and differs from the W of at least one other order (so a wrong order could not pass unnoticed)."""
    from mgs.surgery.methods.base import GroupContext
    from mgs.surgery.methods.pcgrad import pcgrad

    grams = _gramians(3, 240, seed=5)
    fast = weights(grams, "pcgrad", seed=1, step=2)
    order_sensitive = 0
    for g in range(grams.shape[0]):
        if not fast.finite[g]:
            continue
        other_seed = pcgrad(grams[g], GroupContext(seed=2, step=2, group_index=g)).matrix
        order_sensitive += not torch.equal(other_seed, fast.matrices[g])
    assert order_sensitive > 5


def _count_ops(fn) -> int:
    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.ops


@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_weights_ops_do_not_grow_with_the_number_of_groups(method):
    """Two domains (PCGrad draws no order): the batched weights cost the same number of tensor ops for 30 groups
    as for 300, where the per-group path costs several ops per group."""
    small, large = _gramians(2, 30, seed=1), _gramians(2, 300, seed=2)  # both with conflicts and NaN
    assert _count_ops(lambda: weights(small, method)) == _count_ops(lambda: weights(large, method))
    assert _count_ops(lambda: weights(large, method, batched=False)) > 300


def test_partition_is_memoised_per_names_granularity_rules_family(monkeypatch):
    names = [f"unique_{__name__}." + n for n in llama_shapes()]  # names no other test has memoised
    calls = []
    original = partition_module.partition

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(partition_module, "partition", counting)
    first = cached_partition(names, "module")
    assert cached_partition(list(names), "module") is first and len(calls) == 1
    assert first == original(names, "module") and first.family == original(names, "module").family
    assert cached_partition(names, "tensor") is not first and len(calls) == 2
    rules = [[r"layers\.(\d+)\.mlp\.", r"ffn\1"]]  # lists (as from YAML) memoise like tuples
    with_rules = cached_partition(names, "module", rules=rules)
    assert cached_partition(names, "module", rules=[tuple(rules[0])]) is with_rules and len(calls) == 3
    assert with_rules == original(names, "module", rules=rules) != first
    with pytest.raises(ValueError, match="rule must be"):
        cached_partition(names, "module", rules=["ab"])  # a 2-character string is not a (regex, template) pair


def test_resolve_partitions_once_and_still_matches_the_per_group_path(monkeypatch):
    grads = conflicting_grads(3, seed=41)
    calls = []
    original = partition_module.partition
    monkeypatch.setattr(partition_module, "partition", lambda *a, **k: calls.append(a) or original(*a, **k))
    partition_module._partition_memo.cache_clear()
    results = [resolve(grads, granularity="tensor", seed=2, step=s) for s in (1, 1, 2)]
    assert len(calls) == 1
    assert all(torch.equal(results[0][0][n], results[1][0][n]) for n in results[0][0])
    slow = weights(results[0][1].gramians, "pcgrad", seed=2, step=1, batched=False)
    assert torch.equal(results[0][1].weights.coeffs, slow.coeffs)
    assert list(results[0][1].weights.infos) == list(slow.infos)


def test_stats_records_and_sq_norms_match_per_group_formulas():
    """to_dict / group_table (built from whole-stack conversions) against each group's Gramian read directly;
    sq_norms against float64 sums of squares of the gradients (a zero domain and a NaN group included)."""
    grads = conflicting_grads(3, seed=17)
    grads["if"] = {n: torch.zeros_like(t) for n, t in grads["if"].items()}
    grads["chat"]["model.layers.1.self_attn.q_proj.weight"][0, 0] = float("nan")
    domains = ["math", "chat", "if"]
    _, stats = resolve(grads, granularity="tensor", domains=domains)
    record, table = stats.to_dict(), stats.group_table()
    assert len(table) == 3 * len(record["groups"])
    for index, group in enumerate(record["groups"]):
        gram = stats.gramians[index]
        for a, b in [(0, 1), (0, 2), (1, 2)]:
            key = "__".join(sorted((domains[a], domains[b])))
            denom = float(gram[a, a].sqrt() * gram[b, b].sqrt())
            expected = float(gram[a, b]) / denom if denom > 0 else 0.0
            row = table[index * 3 + [(0, 1), (0, 2), (1, 2)].index((a, b))]
            assert row["pair"] == key and row["group"] == group["name"]
            assert row["inner"] == float(gram[a, b]) or (row["inner"] != row["inner"] and not group["finite"])
            if expected == expected:  # finite group
                assert group["cos"][key] == expected and row["cos"] == expected
                assert (key in group["conflicts"]) == (float(gram[a, b]) < 0) == row["conflict"]
            else:
                assert group["cos"][key] is None and not group["finite"]
        assert group["weights"] == stats.weights.matrices[index].tolist()
    sq = stats.sq_norms()
    for d, domain in enumerate(domains):
        total = sum(float((t.double() ** 2).sum()) for t in grads[domain].values())
        if total == total:
            assert float(sq[d]) == pytest.approx(total, rel=1e-12)
        else:
            assert not torch.isfinite(sq[d])
    assert float(sq[2]) == 0.0


def test_contiguous_fast_check_agrees_with_the_kernels_own():
    from mgs.surgery import kernels
    from mgs.surgery.gramian import _fits_kernels

    layouts = [torch.zeros(3, 4, 5), torch.zeros(3, 4, 5, dtype=torch.bfloat16), torch.zeros(3, 4, dtype=torch.float64),
               torch.zeros(4, 3, 5).transpose(0, 1), torch.zeros(3, 5, 4).transpose(1, 2), torch.zeros(17, 2),
               torch.zeros(3, 0), torch.zeros(3, 1), torch.zeros(3, 8)[:, ::2], torch.zeros(3)]
    verdicts = [_fits_kernels(t) for t in layouts]
    assert verdicts == [kernels.supports(t.reshape(t.shape[0], -1)) for t in layouts]
    assert True in verdicts and False in verdicts
