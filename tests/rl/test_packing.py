"""Packed (padding-free) training forwards against the padded ones: a tiny GQA Llama (4 query / 2 KV heads, random
weights, float64 on the CPU's exact per-sample SDPA path) must give the same log-probs, entropies, gradients and
optimizer updates either way; the mask builder must not build an [N, N] mask; the packed planner must use the
fewest micro-batches within the budget; and the compiled layers must not recompile per packed micro-batch."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from mgs.rl.attention import IMPLEMENTATION, packed_attention, packed_max_len, varlen_kernel_applies
from mgs.rl.logprobs import build_batch, forward_tokens, plan_packed_micro_batches, token_logprobs
from mgs.rl.model import build_tiny_policy
from mgs.rl.rollout import Completion
from mgs.rl.step import StepSettings, TrainSample, plan_schedule, reference_logprobs, update
from mgs.rl.trainer import resolve_pack


def completions(prompt_lens, completion_lens, seed, vocab=500):
    rng = random.Random(seed)
    return [Completion(i, [rng.randrange(1, vocab) for _ in range(p)], [rng.randrange(1, vocab) for _ in range(c)],
                       "", True) for i, (p, c) in enumerate(zip(prompt_lens, completion_lens))]


@pytest.fixture
def policy64(smollm2_tokenizer):
    policy = build_tiny_policy("llama", seed=1, tokenizer=smollm2_tokenizer, dtype=torch.float64)
    cfg = policy.model.config
    assert cfg._attn_implementation == IMPLEMENTATION and (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    return policy


def _run(model, batch, packed, chunk_tokens=6, **kw):
    model.zero_grad()
    logp, ent = token_logprobs(model, batch.input_ids, batch.attention_mask, start=batch.start,
                               chunk_tokens=chunk_tokens, packed=packed, **kw)
    weights = torch.linspace(-1, 1, logp.numel(), dtype=logp.dtype).view_as(logp)
    (logp * weights).sum().backward()
    return logp.detach(), ent, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_packed_matches_padded_values_and_gradients(smollm2_tokenizer, family):
    """Rows of very different lengths (one with an empty completion, per-row starts): same logp / entropy to
    1e-12 and same parameter gradients to 1e-10 as the padded forward. Attention leaking across the packed
    samples, or wrong restarting positions, would change every row after the first."""
    policy = build_tiny_policy(family, seed=1, tokenizer=smollm2_tokenizer, dtype=torch.float64)
    batch = build_batch(completions([3, 9, 1, 6, 4], [11, 2, 7, 0, 5], seed=2), pad_token_id=0)
    padded = _run(policy.model, batch, packed=False)
    packed = _run(policy.model, batch, packed=True)
    assert packed[0].dtype == torch.float64
    torch.testing.assert_close(packed[0], padded[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(packed[1], padded[1], rtol=0, atol=1e-12)
    assert padded[0].abs().sum() > 0
    for name, g in padded[2].items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(packed[2][name], g, rtol=0, atol=1e-10, msg=name)


def test_packed_forward_builds_no_mask(policy64, monkeypatch):
    """The packed body forward must not build transformers' [N, N] packed-sequence mask (GBs at N = 32k): spy on
    the SDPA mask builder, which the padded forward does call (so the spy is live)."""
    from transformers import masking_utils

    calls = []
    real = masking_utils.sdpa_mask

    def spy(*args, **kwargs):
        mask = real(*args, **kwargs)
        calls.append(mask)
        return mask

    monkeypatch.setattr(masking_utils, "sdpa_mask", spy)
    batch = build_batch(completions([4, 2, 5], [3, 6, 1], seed=3), pad_token_id=0)
    with torch.no_grad():
        token_logprobs(policy64.model, batch.input_ids, batch.attention_mask, start=batch.start)
        assert calls, "the padded forward goes through the mask builder: the spy must see it"
        calls.clear()
        token_logprobs(policy64.model, batch.input_ids, batch.attention_mask, start=batch.start, packed=True)
    assert calls == []


def test_packed_attention_matches_per_sample_reference():
    """The attention function on random float64 q/k/v (GQA 6 query / 2 KV heads, one empty sample) against the
    textbook per-sample causal softmax with explicitly repeated KV heads (transformers' repeat_kv layout)."""
    g = torch.Generator().manual_seed(0)
    lengths = [5, 1, 0, 9, 3]
    n, heads, kv_heads, dim = sum(lengths), 6, 2, 8
    q = torch.randn(1, heads, n, dim, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, kv_heads, n, dim, generator=g, dtype=torch.float64) for _ in range(2))
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    out = packed_attention(q, k, v, cu, packed_max_len(max(lengths)), scaling=0.3)
    assert out.shape == (1, n, heads, dim)
    expect = torch.zeros_like(out)
    kr, vr = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if hi == lo:
            continue
        scores = 0.3 * q[0, :, lo:hi] @ kr[0, :, lo:hi].transpose(-1, -2)
        causal = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
        expect[0, lo:hi] = (scores.masked_fill(~causal, -math.inf).softmax(-1) @ vr[0, :, lo:hi]).transpose(0, 1)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen flash kernel needs CUDA")
def test_varlen_kernel_matches_exact_path_on_cuda(smollm2_tokenizer):
    """On the GPU: the flash varlen path (bf16) against the exact per-sample path on the same bf16 model, and
    packed vs padded token_logprobs (bf16 round-off)."""
    from mgs.rl.attention import _per_sample_sdpa

    g = torch.Generator(device="cuda").manual_seed(0)
    lengths = [37, 1, 200, 64]
    n, heads, kv_heads, dim = sum(lengths), 9, 3, 64
    q = torch.randn(1, heads, n, dim, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, kv_heads, n, dim, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device="cuda")
    assert varlen_kernel_applies(q.device, q.dtype)
    fast = packed_attention(q, k, v, cu, packed_max_len(max(lengths)), scaling=dim ** -0.5, kernel=True)
    exact = _per_sample_sdpa(q.double(), k.double(), v.double(), cu, dim ** -0.5, 0.0)
    torch.testing.assert_close(fast.double(), exact, rtol=0, atol=2e-2)
    policy = build_tiny_policy("llama", seed=1, tokenizer=smollm2_tokenizer, dtype="bfloat16", device="cuda",
                               num_attention_heads=4, num_key_value_heads=2, hidden_size=256)
    batch = build_batch(completions([30, 90, 5], [60, 7, 120], seed=4), pad_token_id=0).to("cuda")
    padded, packed = (_run(policy.model, batch, packed=p) for p in (False, True))
    torch.testing.assert_close(packed[0], padded[0], rtol=0, atol=5e-2)


def _fewest_groups(lengths, budget):
    """Exact minimum number of groups (depth-first search over every assignment, small n)."""
    items = sorted(lengths, reverse=True)

    def fits(k, room, j):
        if j == len(items):
            return True
        for b in range(len(room)):
            if items[j] <= room[b]:
                room[b] -= items[j]
                if fits(k, room, j + 1):
                    return True
                room[b] += items[j]
        if len(room) < k:  # a new group (an over-long item fills it: nothing joins)
            room.append(max(budget - items[j], -1) if items[j] <= budget else -1)
            if fits(k, room, j + 1):
                return True
            room.pop()
        return False

    return next(k for k in range(1, len(items) + 1) if fits(k, [], 0))


def test_packed_planner_fewest_groups_within_budget():
    """Every index exactly once, each group's token sum <= budget (an over-long sequence alone), and as few
    groups as the brute-force optimum on small random cases; on an RL-like length mix (sequences short next to
    the budget) exactly ceil(total / budget) groups."""
    rng = random.Random(0)
    for _ in range(60):
        n = rng.randint(1, 8)
        lengths = [rng.randint(1, 40) for _ in range(n)]
        budget = rng.choice([30, 50, 80])
        groups = plan_packed_micro_batches(lengths, budget)
        assert sorted(i for g in groups for i in g) == list(range(n))
        for g in groups:
            assert sum(lengths[i] for i in g) <= budget or len(g) == 1
        assert len(groups) == _fewest_groups(lengths, budget), (lengths, budget, groups)
    lengths = [rng.randint(80, 420) for _ in range(192)]
    groups = plan_packed_micro_batches(lengths, 16384)
    assert len(groups) == math.ceil(sum(lengths) / 16384)
    assert max(forward_tokens([lengths[i] for i in g], packed=True) for g in groups) <= 16384
    with pytest.raises(ValueError, match="max_tokens"):
        plan_packed_micro_batches([3], 0)


def _samples(seed):
    rng = random.Random(seed)
    out = []
    for domain in ("math", "chat", "ifeval"):
        for _ in range(4):
            out.append(TrainSample(domain, [rng.randrange(1, 500) for _ in range(rng.randint(2, 9))],
                                   [rng.randrange(1, 500) for _ in range(rng.randint(1, 14))], rng.gauss(0, 1)))
    return out


@pytest.mark.parametrize("per_domain,surgery", [(False, False), (True, True)], ids=["mixed", "mgs"])
def test_update_with_pack_equals_padded_update(smollm2_tokenizer, per_domain, surgery):
    """One `update()` (KL term with packed reference log-probs, entropy bonus, gradient clipping, plain SGD so the
    update IS the combined gradient) with pack on vs off, each with its own token-budget schedule: the same new
    parameters to 1e-10 and the same loss, for Mixed RL and for MGS (per-domain gradients + PCGrad)."""
    results = {}
    samples = _samples(5)
    for pack in (False, True):
        policy = build_tiny_policy("llama", seed=1, tokenizer=smollm2_tokenizer, dtype=torch.float64)
        model = policy.model
        refs = reference_logprobs(model, samples, 0, max_tokens=30, packed=pack)
        run = [TrainSample(s.domain, s.prompt_ids, s.completion_ids, s.advantage, r) for s, r in zip(samples, refs)]
        schedule = plan_schedule(run, ["math", "chat", "ifeval"], 30, unit="tokens", packed=pack)
        assert all(forward_tokens([len(run[i].prompt_ids) + len(run[i].completion_ids) for i in mb.indices], pack)
                   <= 30 for mb in schedule.micro_batches)
        settings = StepSettings(per_domain=per_domain, surgery=surgery, kl_coef=0.1, entropy_coef=0.01,
                                grad_clip=0.5, pack=pack, buffer_dtype=None)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        outcome = update(model, torch.optim.SGD(model.parameters(), lr=1.0), run, schedule, settings, step=1, pad_id=0)
        assert outcome.metrics["train/skipped"] == 0.0
        results[pack] = (refs, outcome.metrics, {n: p.detach() - before[n] for n, p in model.named_parameters()},
                         len(schedule.micro_batches))
    (refs0, m0, d0, mbs0), (refs1, m1, d1, mbs1) = results[False], results[True]
    assert mbs1 < mbs0  # packing needs fewer micro-batches at the same budget (it is worth something)
    for a, b in zip(refs0, refs1):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    assert m1["train/loss"] == pytest.approx(m0["train/loss"], rel=1e-6)  # the step sums micro-batch parts in float32
    assert m1["train/grad_norm"] == pytest.approx(m0["train/grad_norm"], rel=1e-10)
    for name, delta in d0.items():
        torch.testing.assert_close(d1[name], delta, rtol=0, atol=1e-10, msg=name)
    assert sum(float(d.abs().sum()) for d in d0.values()) > 0


def test_compiled_packed_forward_matches_eager_without_recompiling(tiny_policy, monkeypatch):
    """train.compile + train.pack (float32): the compiled decoder layers get the packed kwargs; same values and
    gradients as the eager packed forward, and micro-batches of other sizes / sample counts reuse the graphs."""
    import torch._inductor.config
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1, raising=False)
    model = tiny_policy.model
    graphs = []
    # sample counts whose S + 1 doesn't equal a head count (duck sizing would tie the two sizes: one extra compile);
    # one LM-head chunk per micro-batch (a chunk of 1 token recompiles the chunk function: 0/1 specialization)
    for k, count in enumerate((5, 7, 4, 9)):
        rng = random.Random(k)
        batch = build_batch(completions([rng.randint(1, 9) for _ in range(count)],
                                        [rng.randint(1, 12) for _ in range(count)], seed=k), pad_token_id=0)
        eager = _run(model, batch, packed=True, chunk_tokens=1000)
        compiled = _run(model, batch, packed=True, chunk_tokens=1000, compile=True)
        torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(compiled[1], eager[1], rtol=1e-5, atol=1e-5)
        for name, g in eager[2].items():
            torch.testing.assert_close(compiled[2][name], g, rtol=1e-4, atol=1e-6, msg=name)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and graphs[1:] == [graphs[0]] * 3, graphs


def test_resolve_pack(tiny_policy):
    """auto: off on CPU (no varlen kernel) and under DDP/FSDP2; on: the exact path, refused where it can't apply."""
    model = tiny_policy.model
    assert resolve_pack("off", model, False) is False
    assert resolve_pack("auto", model, False) is varlen_kernel_applies("cpu", torch.float32) is False
    assert resolve_pack("on", model, False) is True
    with pytest.raises(ValueError, match="DDP/FSDP2"):
        resolve_pack("on", model, True)
    model.set_attn_implementation("eager")
    with pytest.raises(ValueError, match="mgs_sdpa"):
        resolve_pack("on", model, False)
    with pytest.raises(ValueError, match="train.pack must be"):
        resolve_pack("yes", model, False)


def test_trainer_step_with_pack_on_equals_pack_off(tmp_path):
    """train.pack=on through the trainer (token budget, KL reference, MGS): the settings and the reference take
    it, and one rollout + update gives the same loss and parameters as train.pack=off (float32 round-off)."""
    from mgs.config import from_dict
    from mgs.rl import trainer

    outcomes = {}
    for pack in ("off", "on"):
        cfg = from_dict({
            "model": {"name": "tiny:llama"},
            "domains": [{"name": "vowels", "kind": "toy", "params": {"chars": "aeiou"}},
                        {"name": "digits", "kind": "toy", "params": {"chars": "0123456789 "}}],
            "strategy": {"name": "mgs"},
            "grpo": {"group_size": 4, "prompts_per_step": 2, "kl_coef": 0.01},
            "rollout": {"max_new_tokens": 6},
            "optim": {"lr": 1e-2, "weight_decay": 0.0},
            "train": {"steps": 1, "out_dir": str(tmp_path / pack), "micro_batch_size": 64,
                      "micro_batch_unit": "tokens", "pack": pack},
            "eval": {"before": False, "after": False},
            "logging": {"progress": False},
        })
        run = trainer.Run(cfg)
        assert run.settings.pack is (pack == "on") and run.reference.packed is (pack == "on")
        scored, _ = run.rollout(1, run.plan.stages[0])
        outcome, _ = run.learn(scored, 1, run.plan.stages[0])
        outcomes[pack] = (outcome.metrics, {n: p.detach().clone() for n, p in run.policy.model.named_parameters()})
    (m_off, p_off), (m_on, p_on) = outcomes["off"], outcomes["on"]
    assert m_on["train/skipped"] == m_off["train/skipped"] == 0.0
    assert m_on["train/loss"] == pytest.approx(m_off["train/loss"], rel=1e-5, abs=1e-7)
    assert m_on["train/kl"] == pytest.approx(m_off["train/kl"], rel=1e-4, abs=1e-7)
    for name, p in p_off.items():
        torch.testing.assert_close(p_on[name], p, rtol=1e-5, atol=1e-6, msg=name)
