"""The per-domain step on a tiny real model with fixed (injected) rollouts: domain gradients add up to the Mixed-RL
gradient, `method=sum` reproduces the Mixed-RL update, PCGrad changes it where groups conflict, bad steps skip."""

import copy

import pytest
import torch

from mgs.rl.grpo import group_advantages
from mgs.rl.step import StepSettings, TrainSample, micro_batch_loss, plan_schedule, update


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
    # b's lengths 6, 4, 3 (longest first), budget 12, overhead 12 // 4 = 3 per micro-batch: [6] + [4, 3] pads
    # 6 + 8 = 14 (+ 2 x 3), cheaper than filling the budget, [6, 4] + [3] = 12 + 3 (+ 2 x 3)
    assert [m.indices for m in by_tokens.micro_batches] == [(3,), (1,), (2, 0)]
    with pytest.raises(ValueError, match="not in the step's domain order"):
        plan_schedule(samples, ["a"], 2)


def test_absent_domain_policy(tiny_policy):
    """A domain of the step without trainable samples gets no buffer; surgery sees only the present ones."""
    samples = [s for s in fixed_rollouts(tiny_policy.tokenizer, seed=3, domains=("a", "b", "c")) if s.domain != "b"]
    out, _ = run(tiny_policy, samples, StepSettings(method="pcgrad", granularity="global"), order=("a", "b", "c"))
    assert out.metrics["train/b/absent"] == 1.0 and "grad/b/norm" not in out.metrics
    assert out.metrics["grad/a/norm"] > 0 and out.metrics["grad/c/norm"] > 0
    assert out.surgery_stats.domains == ["a", "c"] and out.metrics["train/skipped"] == 0.0


def test_accumulate_grad_adds_into_a_view_of_the_buffer():
    """The in-place step relies on this: with `p.grad` set to a row of a stacked buffer, autograd accumulates
    every later backward into that row (same storage) instead of replacing it."""
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    buf = torch.zeros(3, 3)
    p.grad = buf[1]
    (p * torch.tensor([1.0, 10.0, 100.0])).sum().backward()
    (2 * p).sum().backward()
    assert p.grad.data_ptr() == buf[1].data_ptr()
    assert torch.equal(buf, torch.tensor([[0.0, 0, 0], [3.0, 12.0, 102.0], [0, 0, 0]]))


class _GradRecorder(torch.optim.SGD):
    """SGD that records, for each gradient at step time, the number of elements of its storage."""

    def step(self, closure=None):
        self.storage_numels = [p.grad.untyped_storage().nbytes() // p.grad.element_size()
                               for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.numels = [p.numel() for g in self.param_groups for p in g["params"] if p.grad is not None]
        return super().step(closure)


@pytest.mark.parametrize("method,granularity", [("sum", "module"), ("pcgrad", "tensor"), ("pcgrad", "global")])
def test_in_place_combine_matches_the_copy_path(tiny_policy, method, granularity):
    """Buffers in the parameter dtype: `.grad` is row 0 of the [D, ...] buffer (no extra combined gradient: the
    memory target), and the update equals the copy path's (float64 buffers, separate combined .grad) and, for
    `sum`, Mixed RL's."""
    samples = fixed_rollouts(tiny_policy.tokenizer, seed=4, domains=("a", "b", "c"))
    order = ("a", "b", "c")
    policies = [tiny_policy, copy.deepcopy(tiny_policy), copy.deepcopy(tiny_policy)]
    before = params_of(tiny_policy.model)
    results = []
    in_place_dtype = None if granularity == "global" else torch.float32  # None = the parameter's dtype
    for policy, dtype in zip(policies[:2], (in_place_dtype, torch.float64)):
        opt = _GradRecorder(policy.model.parameters(), lr=1.0)
        out = update(policy.model, opt, samples, plan_schedule(samples, order, 3), step=1,
                     settings=StepSettings(method=method, granularity=granularity, buffer_dtype=dtype, grad_clip=0),
                     pad_id=policy.tokenizer.pad_token_id)
        assert out.metrics["train/skipped"] == 0.0
        results.append((opt, out, params_of(policy.model)))
    (opt_in, out_in, after_in), (opt_copy, _, after_copy) = results
    assert opt_in.storage_numels == [3 * n for n in opt_in.numels]  # .grad is a view of the [3, ...] buffer
    assert opt_copy.storage_numels == opt_copy.numels  # the copy path's own combined .grad
    delta = lambda after: {n: after[n] - before[n] for n in before}  # noqa: E731
    assert rel_err(delta(after_in), delta(after_copy)) < 1e-5
    if method == "sum":
        mixed_opt = torch.optim.SGD(policies[2].model.parameters(), lr=1.0)
        update(policies[2].model, mixed_opt, samples, plan_schedule(samples, order, 5), step=1,
               settings=StepSettings(per_domain=False, surgery=False, grad_clip=0),
               pad_id=policies[2].tokenizer.pad_token_id)
        assert rel_err(delta(after_in), delta(params_of(policies[2].model))) < 1e-5
    else:
        assert out_in.metrics["surgery/groups_conflicted_frac"] > 0


def test_reference_logprobs_token_batching_keeps_order_and_values(tiny_policy):
    """Length-bucketed token batches (any budget) give each sample the same log-probs, in the samples' order, as
    fixed-size batches in order."""
    from mgs.rl.step import TrainSample, reference_logprobs

    g = torch.Generator().manual_seed(4)
    samples = [TrainSample("d", torch.randint(3, 400, (int(p),), generator=g).tolist(),
                           torch.randint(3, 400, (int(c),), generator=g).tolist(), 0.0)
               for p, c in zip(torch.randint(2, 9, (7,), generator=g), torch.randint(1, 12, (7,), generator=g))]
    pad = tiny_policy.tokenizer.pad_token_id
    ref = reference_logprobs(tiny_policy.model, samples, pad, batch_size=1)
    for max_tokens in (1, 24, 10_000):
        got = reference_logprobs(tiny_policy.model, samples, pad, max_tokens=max_tokens)
        assert [len(t) for t in got] == [len(s.completion_ids) for s in samples]
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kl", [0.0, 0.05])
def test_a_micro_batch_reads_nothing_back_from_the_device(tiny_policy, kl):
    """No host sync in a training micro-batch (docs/performance.md, session 6): with the model on the meta device,
    any data-dependent read of a device tensor (.item(), nonzero, boolean indexing, torch.equal, .tolist()) raises,
    so forward + loss + backward of a CPU batch passing here reads nothing back (the padded path; the packed one
    uses the varlen kernel on CUDA, checked there by benchmarks/check_cuda.py under sync_debug_mode="error")."""
    from mgs.rl.logprobs import token_logprobs

    samples = fixed_rollouts(tiny_policy.tokenizer)
    if kl:
        samples = [TrainSample(s.domain, s.prompt_ids, s.completion_ids, s.advantage,
                               ref_logp=torch.randn(len(s.completion_ids))) for s in samples]
    model = tiny_policy.model.to("meta")
    pad = tiny_policy.tokenizer.pad_token_id
    loss, terms = micro_batch_loss(model, samples, StepSettings(kl_coef=kl), pad, 100.0)
    loss.backward()
    assert loss.device.type == "meta" and terms.tokens.device.type == "meta"
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())
    # the detector works: a layout derived from device tensors (what token_logprobs did before) does raise
    ids = torch.tensor([[5, 6, 7, 8]], device="meta")
    with pytest.raises((NotImplementedError, RuntimeError)):
        token_logprobs(model, ids, torch.ones_like(ids), start=2)
