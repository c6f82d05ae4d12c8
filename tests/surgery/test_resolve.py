"""resolve / local_gramians / weights / combine against an independent float64 loop reference."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from mgs.surgery import StackedGrads, combine, local_gramians, partition, resolve, weights
from surgery_helpers import DOMAIN_NAMES, conflicting_grads, reference, stack

RULES = [(r"layers\.(\d+)\.self_attn\.", r"L\1.attention"), (r"layers\.(\d+)\.mlp\.", r"L\1.ffn")]
GRANULARITIES = ["tensor", "module", "block", "global", "regex"]


def _resolve(grads, granularity, method, **kw):
    rules = RULES if granularity == "regex" else None
    return resolve(grads, granularity=granularity, method=method, rules=rules, **kw)


def _orders(stats):
    return [info.get("orders") for info in stats.weights.infos]


def _assert_close(actual, expected, atol=1e-10, rtol=1e-10):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name].double(), expected[name], atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("method", ["sum", "pcgrad"])
@pytest.mark.parametrize("num_domains", [2, 3, 4])
def test_matches_float64_reference(granularity, method, num_domains):
    grads = conflicting_grads(num_domains, seed=num_domains)
    domains = DOMAIN_NAMES[:num_domains]
    combined, stats = _resolve(grads, granularity, method, seed=3, step=7, domains=domains)
    groups = partition(list(grads[domains[0]]), granularity, rules=RULES if granularity == "regex" else None)
    assert stats.group_names == list(groups)
    expected = reference(grads, groups, domains, method, _orders(stats))
    _assert_close(combined, expected)
    if method == "pcgrad":
        assert any(info["projections"] for info in stats.weights.infos), "the test data must make conflicts happen"
    # The pre-stacked layout gives the same result.
    stacked_combined, _ = _resolve(stack(grads, domains), granularity, method, seed=3, step=7)
    _assert_close(stacked_combined, expected)


def test_conflicts_are_recorded_and_resolved_for_two_domains():
    grads = conflicting_grads(2, seed=11)
    combined, stats = resolve(grads, granularity="module", method="pcgrad")
    domains = stats.domains
    conflicted = [g for g, row in zip(stats.group_names, stats.gramians) if row[0, 1] < 0]
    assert conflicted and len(conflicted) < len(stats.group_names), "need conflicting and agreeing groups"
    groups = partition(list(grads[domains[0]]), "module")
    for index, (group, names) in enumerate(groups.items()):
        vecs = [torch.cat([grads[d][n].reshape(-1) for n in names]) for d in domains]
        W = stats.weights.matrices[index]
        projected = [W[i, 0] * vecs[0] + W[i, 1] * vecs[1] for i in range(2)]
        record = stats.to_dict()["groups"][index]
        if group in conflicted:
            assert record["conflicts"] == ["chat__math"]
            # PCGrad's defining property: each projected vector is orthogonal to the other original.
            for i in range(2):
                assert abs(float(projected[i] @ vecs[1 - i])) < 1e-9 * float(vecs[0].norm() * vecs[1].norm())
        else:
            assert record["conflicts"] == [] and torch.equal(W, torch.eye(2, dtype=torch.float64))


def test_running_projection_never_ends_negative_against_the_last_visited():
    grads = conflicting_grads(4, seed=5)
    domains = DOMAIN_NAMES[:4]
    _, stats = resolve(grads, granularity="module", domains=domains)
    groups = partition(list(grads["math"]), "module")
    for index, names in enumerate(groups.values()):
        G = torch.stack([torch.cat([grads[d][n].reshape(-1) for n in names]) for d in domains])
        projected = stats.weights.matrices[index] @ G
        for i, order in enumerate(stats.weights.infos[index]["orders"]):
            last = order[-1]
            assert float(projected[i] @ G[last]) >= -1e-9 * float(G[i].norm() * G[last].norm())


def test_sum_equals_plain_sum_exactly():
    grads = conflicting_grads(3, seed=1, dtype=torch.float32)
    combined, stats = resolve(grads, granularity="module", method="sum")
    for name, tensor in combined.items():
        assert torch.equal(tensor, grads["chat"][name] + grads["if"][name] + grads["math"][name]), name
    assert torch.equal(stats.weights.coeffs, torch.ones_like(stats.weights.coeffs))


def test_two_domains_do_not_depend_on_the_seed():
    grads = conflicting_grads(2, seed=2)
    first, _ = resolve(grads, seed=0, step=0)
    for seed, step in [(1, 0), (0, 5), (123, 9)]:
        other, _ = resolve(grads, seed=seed, step=step)
        _assert_close(other, first, atol=0, rtol=0)


def test_orders_are_seeded_by_seed_step_group_only():
    grads = conflicting_grads(4, seed=3)
    torch.manual_seed(0)
    a, stats_a = resolve(grads, seed=1, step=2)
    torch.manual_seed(99)  # global RNG must not matter
    b, stats_b = resolve(grads, seed=1, step=2)
    _assert_close(a, b, atol=0, rtol=0)
    assert _orders(stats_a) == _orders(stats_b)
    for orders in _orders(stats_a):
        for i, order in enumerate(orders):
            assert sorted(order) == [j for j in range(4) if j != i]
    _, stats_c = resolve(grads, seed=1, step=3)
    _, stats_d = resolve(grads, seed=2, step=2)
    assert _orders(stats_c) != _orders(stats_a) and _orders(stats_d) != _orders(stats_a)
    assert len({json.dumps(o) for o in _orders(stats_a)}) > 1, "groups must draw different orders"


def _shard(tensor, cuts):
    return [tensor[a:b] for a, b in zip([0, *cuts], [*cuts, tensor.shape[0]])]


@pytest.mark.parametrize("granularity", ["module", "tensor", "global"])
@pytest.mark.parametrize("num_domains", [2, 3])
def test_sharded_gramians_sum_to_the_whole(granularity, num_domains):
    """FSDP-style: each of k ranks holds a different, uneven dim-0 slice of every tensor (some empty)."""
    grads = conflicting_grads(num_domains, seed=20 + num_domains)
    domains = DOMAIN_NAMES[:num_domains]
    names = list(grads[domains[0]])
    groups = partition(names, granularity)
    whole, _ = resolve(grads, granularity=granularity, domains=domains, seed=4, step=1)

    gen = torch.Generator().manual_seed(0)
    k = 3
    cuts = {}
    for name in names:
        rows = grads[domains[0]][name].shape[0]
        cuts[name] = sorted(torch.randint(0, rows + 1, (k - 1,), generator=gen).tolist())
    shards = [
        StackedGrads(domains, {n: torch.stack([_shard(grads[d][n], cuts[n])[r] for d in domains]) for n in names})
        for r in range(k)
    ]
    total = sum(local_gramians(s, groups) for s in shards)
    w = weights(total, method="pcgrad", seed=4, step=1)
    parts = [combine(s, groups, w.coeffs) for s in shards]
    for name in names:
        torch.testing.assert_close(torch.cat([p[name] for p in parts]), whole[name], atol=1e-12, rtol=1e-12)

    # The same through resolve(reduce=...): the reduce sees all groups at once, exactly once per call.
    calls = []

    def reduce(local):
        calls.append(tuple(local.shape))
        return total

    shard_out, _ = resolve(shards[1], granularity=granularity, seed=4, step=1, reduce=reduce)
    assert calls == [(len(groups), num_domains, num_domains)]
    for name in names:
        torch.testing.assert_close(shard_out[name], parts[1][name], atol=0, rtol=0)


def test_combine_writes_into_given_buffers_of_another_dtype():
    grads = conflicting_grads(3, seed=8, dtype=torch.float32)
    domains = DOMAIN_NAMES[:3]
    stacked = stack(grads, domains)
    out = {n: torch.full(t.shape[1:], float("nan"), dtype=torch.float64) for n, t in stacked.tensors.items()}
    combined, stats = resolve(stacked, out=out)
    expected = reference(grads, partition(list(out), "module"), domains, "pcgrad", _orders(stats))
    for name in out:
        assert combined[name] is out[name]
    _assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_bf16_accumulates_gramian_in_fp32():
    grads = conflicting_grads(2, seed=9, dtype=torch.bfloat16)
    domains = ["chat", "math"]
    groups = partition(list(grads["math"]), "module")
    grams = local_gramians(grads, groups)
    assert grams.dtype == torch.float32
    exact = local_gramians({d: {n: t.double() for n, t in g.items()} for d, g in grads.items()}, groups)
    torch.testing.assert_close(grams.double(), exact, rtol=1e-5, atol=1e-3)
    combined, stats = resolve(stack(grads, domains))
    assert all(t.dtype == torch.bfloat16 for t in combined.values())
    expected = reference(grads, groups, domains, "pcgrad", _orders(stats))
    _assert_close(combined, expected, atol=5e-2, rtol=2e-2)


def test_summary_matches_reference_numbers():
    grads = conflicting_grads(3, seed=12)
    domains = DOMAIN_NAMES[:3]
    _, stats = resolve(grads, granularity="module")
    groups = partition(list(grads["math"]), "module")
    summary = stats.summary()
    whole = {d: torch.cat([t.reshape(-1) for t in grads[d].values()]) for d in domains}
    for a, b in itertools.combinations(sorted(domains), 2):
        key = f"{a}__{b}"
        cos = float(whole[a] @ whole[b] / (whole[a].norm() * whole[b].norm()))
        assert summary[f"surgery/cos/{key}"] == pytest.approx(cos, rel=1e-9, abs=1e-12)
        assert summary[f"surgery/norm_ratio/{key}"] == pytest.approx(float(whole[a].norm() / whole[b].norm()))
        negatives = sum(
            float(torch.cat([grads[a][n].reshape(-1) for n in names]) @ torch.cat([grads[b][n].reshape(-1) for n in names])) < 0
            for names in groups.values()
        )
        assert summary[f"surgery/conflict_frac/{key}"] == pytest.approx(negatives / len(groups))
    assert 0 < summary["surgery/groups_conflicted_frac"] <= 1 and summary["surgery/finite"] == 1.0
    rows = stats.group_table()
    assert len(rows) == len(groups) * 3
    assert {(r["layer"], r["part"]) for r in rows if r["layer"] is not None} == {(0, "attn"), (0, "mlp"), (1, "attn"), (1, "mlp")}
    record = json.loads(json.dumps(stats.to_dict(), allow_nan=False))
    assert [g["name"] for g in record["groups"]] == list(groups)
    assert set(record["groups"][1]["orders"]) == set(domains)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_blocked_gramian_equals_plain_matmul(dtype):
    """The column-blocked batched Gramian (used for long tensors) agrees with one float64 matmul per group."""
    grads = conflicting_grads(3, seed=13, dtype=dtype)
    groups = partition(list(grads["math"]), "module")
    exact = local_gramians({d: {n: t.double() for n, t in g.items()} for d, g in grads.items()}, groups, chunk_columns=0)
    for chunk in (7, 16, 1 << 16):
        blocked = local_gramians(stack(grads, sorted(grads)), groups, chunk_columns=chunk)
        assert blocked.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(blocked.double(), exact, rtol=tol, atol=tol * float(exact.abs().max()))
