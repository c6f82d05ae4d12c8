"""The per-domain step on a tiny real model with fixed (injected) rollouts: domain gradients add up to the Mixed-RL
gradient, `method=sum` reproduces the Mixed-RL update, PCGrad changes it where groups conflict, bad steps skip."""

import copy

import pytest
import torch

from mgs.rl.grpo import group_advantages
from mgs.rl.step import StepSettings, TrainSample, plan_schedule, update


def fixed_rollouts(tokenizer, seed=0, domains=("a", "b"), prompts=2, group=4):
    """Random prompt/completion ids; rewards = fraction of completion tokens in a domain-specific id set (so the
    domains pull towards different tokens), advantages from the real group normalisation."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for k, domain in enumerate(domains):
        rewards, rows = [], []
        for p in range(prompts):
            prompt = torch.randint(100, 2000, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(group):
                n = int(torch.randint(2, 12, (1,), generator=g))
                comp = torch.randint(100 + 50 * k, 150 + 50 * k + 20, (n,), generator=g).tolist()
                rows.append((prompt, comp))
                rewards.append(sum(t < 150 + 50 * k for t in comp) / n)
        adv = group_advantages(rewards, group).advantages
        samples += [TrainSample(domain, p, c, a) for (p, c), a in zip(rows, adv)]
    return samples


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run(policy, samples, settings, *, lr=1e-3, sgd=False, mbs=3, unit="samples", order=("a", "b"), keep=False):
    model = policy.model
    opt = (torch.optim.SGD(model.parameters(), lr=1.0) if sgd
           else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0))
    schedule = plan_schedule(samples, order, mbs, unit)
    out = update(model, opt, samples, schedule, settings, step=1, pad_id=policy.tokenizer.pad_token_id,
                 keep_domain_grads=keep)
    return out, params_of(model)


def rel_err(a, b):
    num = sum(float((a[n] - b[n]).double().pow(2).sum()) for n in a)
    den = sum(float(b[n].double().pow(2).sum()) for n in b)
    return (num / den) ** 0.5


def test_domain_grads_sum_to_mixed_gradient(tiny_policy):
    samples = fixed_rollouts(tiny_policy.tokenizer)
    before = params_of(tiny_policy.model)
    mixed_policy = copy.deepcopy(tiny_policy)
    # SGD lr 1, no clip: the parameter change is minus the gradient that was written into .grad
    _, after_mixed = run(mixed_policy, samples, StepSettings(per_domain=False, surgery=False, grad_clip=0), sgd=True)
    out, _ = run(tiny_policy, samples, StepSettings(per_domain=True, surgery=False, grad_clip=0), sgd=True, keep=True)
    mixed_grad = {n: before[n] - after_mixed[n] for n in before}
    dg = out.domain_grads
    assert set(dg) == {"a", "b"}
    for d in ("a", "b"):
        assert out.metrics[f"grad/{d}/norm"] > 0
    summed = {n: dg["a"][n] + dg["b"][n] for n in dg["a"]}
    assert rel_err(summed, {n: mixed_grad[n] for n in summed}) < 1e-5
    assert out.metrics["mem/domain_buffers_gb"] > 0
    assert out.metrics["train/skipped"] == 0.0


def test_sum_method_reproduces_mixed_update_and_pcgrad_differs(tiny_policy):
    samples = fixed_rollouts(tiny_policy.tokenizer, seed=1)
    p_mixed, p_sum, p_pc = tiny_policy, copy.deepcopy(tiny_policy), copy.deepcopy(tiny_policy)
    before = params_of(p_mixed.model)
    out_mixed, mixed = run(p_mixed, samples, StepSettings(per_domain=False, surgery=False), mbs=5)
    # different micro-batching (tokens) on purpose: the update must not depend on it
    out_sum, summed = run(p_sum, samples, StepSettings(per_domain=True, surgery=True, method="sum",
                                                       granularity="module"), mbs=64, unit="tokens")
    assert rel_err({n: summed[n] - before[n] for n in before}, {n: mixed[n] - before[n] for n in before}) < 1e-5
    assert out_sum.metrics["train/grad_norm"] == pytest.approx(out_mixed.metrics["train/grad_norm"], rel=1e-5)

    out_pc, pc = run(p_pc, samples, StepSettings(per_domain=True, surgery=True, method="pcgrad", granularity="tensor"))
    assert out_pc.metrics["surgery/groups_conflicted_frac"] > 0  # at least one group conflicted
    assert out_pc.surgery_stats.to_dict()  # JSON-able stats for surgery/step_XXXXXX.json
    assert rel_err({n: pc[n] - before[n] for n in before}, {n: mixed[n] - before[n] for n in before}) > 1e-3


def test_nonfinite_step_is_skipped(tiny_policy):
    samples = fixed_rollouts(tiny_policy.tokenizer, seed=2)
    samples[0].advantage = float("nan")
    before = params_of(tiny_policy.model)
    for settings in (StepSettings(per_domain=False, surgery=False), StepSettings(method="pcgrad")):
        out, after = run(tiny_policy, samples, settings)
        assert out.metrics["train/skipped"] == 1.0
        assert all(torch.equal(before[n], after[n]) for n in before)


def test_schedule_grouped_by_domain_and_absent_domain():
    samples = [TrainSample("b", [1, 2], [3] * n, 0.5) for n in (1, 4, 2)] + [TrainSample("a", [1], [2, 3], -1.0)]
    sched = plan_schedule(samples, ["a", "b", "c"], micro_batch_size=2)
    assert sched.domains == ("a", "b") and sched.absent == ("c",)
    assert [m.domain for m in sched.micro_batches] == ["a", "b", "b"]
    assert sched.micro_batches[1].indices == (1, 2)  # longest first
    assert sched.loss_denominator == 1 + 4 + 2 + 2
    by_tokens = plan_schedule(samples, ["a", "b"], micro_batch_size=12, unit="tokens")
    assert [m.indices for m in by_tokens.micro_batches] == [(3,), (1, 2), (0,)]  # 2 rows x 6 <= 12; 3 rows x 6 > 12
    with pytest.raises(ValueError, match="not in the step's domain order"):
        plan_schedule(samples, ["a"], 2)


def test_absent_domain_policy(tiny_policy):
    """A domain of the step without trainable samples gets no buffer; surgery sees only the present ones."""
    samples = [s for s in fixed_rollouts(tiny_policy.tokenizer, seed=3, domains=("a", "b", "c")) if s.domain != "b"]
    out, _ = run(tiny_policy, samples, StepSettings(method="pcgrad", granularity="global"), order=("a", "b", "c"))
    assert out.metrics["train/b/absent"] == 1.0 and "grad/b/norm" not in out.metrics
    assert out.metrics["grad/a/norm"] > 0 and out.metrics["grad/c/norm"] > 0
    assert out.surgery_stats.domains == ["a", "c"] and out.metrics["train/skipped"] == 0.0
