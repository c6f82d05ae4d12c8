"""token_logprobs against a straightforward float64 reference (values, entropies, gradients; with and without
chunking; shared and per-row starts; peft), and build_batch's layout."""

from __future__ import annotations

import pytest
import torch

from mgs.rl.logprobs import build_batch, plan_micro_batches, token_logprobs
from mgs.rl.model import build_tiny_policy, encode_prompts
from mgs.rl.rollout import Completion, HFGenerateBackend


def reference(model, input_ids, attention_mask, start, temperature=1.0):
    """Full logits -> float64 log_softmax -> gather, row by row, on the unpadded sequence."""
    B, T = input_ids.shape
    start = torch.as_tensor(start).expand(B) if not torch.is_tensor(start) or start.dim() == 0 else start
    Tc = T - int(start.min())
    logp = torch.zeros(B, Tc, dtype=torch.float64)
    ent = torch.zeros(B, Tc, dtype=torch.float64)
    for b in range(B):
        n = int(attention_mask[b].sum())
        logits = model(input_ids[b : b + 1, :n]).logits[0].double() / temperature  # [n, V]
        lsm = torch.log_softmax(logits, -1)
        s = int(start[b])
        for j, pos in enumerate(range(s, n)):
            logp[b, j] = lsm[pos - 1, input_ids[b, pos]]
            ent[b, j] = -(lsm[pos - 1].exp() * lsm[pos - 1]).sum()
    return logp, ent


def random_completions(vocab, prompt_lens, completion_lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (p, c) in enumerate(zip(prompt_lens, completion_lens)):
        ids = torch.randint(3, vocab, (p + c,), generator=g).tolist()
        out.append(Completion(i, ids[:p], ids[p:], "", False))
    return out


@pytest.mark.parametrize(
    "family,chunk_tokens,via_forward",
    [("llama", 1, False), ("llama", 7, False), ("llama", 100_000, False), ("qwen2", 7, False), ("qwen2", 100_000, False),
     ("llama", 7, True), ("qwen2", 100_000, True)],
)
def test_matches_reference_values_entropy_and_gradients(family, chunk_tokens, via_forward, smollm2_tokenizer):
    policy = build_tiny_policy(family, seed=1, tokenizer=smollm2_tokenizer)
    model = policy.model
    comps = random_completions(len(smollm2_tokenizer), [5, 9, 3, 6], [4, 0, 7, 2])
    batch = build_batch(comps, pad_token_id=smollm2_tokenizer.pad_token_id)
    weights = torch.randn(batch.completion_mask.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    logp, ent = token_logprobs(
        model, batch.input_ids, batch.attention_mask, start=batch.start, chunk_tokens=chunk_tokens,
        via_forward=via_forward,
    )
    (logp.double() * weights * batch.completion_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    ref_logp, ref_ent = reference(model, batch.input_ids, batch.attention_mask, batch.start)
    (ref_logp * weights * batch.completion_mask).sum().backward()
    assert logp.shape == ent.shape == batch.completion_mask.shape
    assert torch.allclose(logp.double(), ref_logp, atol=1e-5, rtol=0)
    assert torch.allclose(ent.double(), ref_ent, atol=1e-5, rtol=0)
    assert torch.all(logp[batch.completion_mask == 0] == 0)
    assert not ent.requires_grad
    nonzero = 0
    for n, p in model.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-5, rtol=1e-4), n
        nonzero += int(p.grad.abs().sum() > 0)
    assert nonzero == len(grads)  # every parameter gets a (non-zero) gradient


@pytest.mark.parametrize("via_forward", [False, True])
def test_entropy_grad_matches_reference_gradient(via_forward, tiny_policy):
    model = tiny_policy.model
    comps = random_completions(len(tiny_policy.tokenizer), [4, 6], [5, 2], seed=5)
    batch = build_batch(comps, pad_token_id=tiny_policy.tokenizer.pad_token_id)
    _, ent = token_logprobs(
        model, batch.input_ids, batch.attention_mask, start=batch.start, chunk_tokens=3, entropy_grad=True,
        via_forward=via_forward,
    )
    (ent * batch.completion_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    _, ref_ent = reference(model, batch.input_ids, batch.attention_mask, batch.start)
    (ref_ent * batch.completion_mask).sum().backward()
    for n, p in model.named_parameters():
        assert p.grad.abs().sum() > 0 and torch.allclose(grads[n], p.grad, atol=1e-6, rtol=1e-4), n


def test_int_start_and_temperature(tiny_policy):
    comps = random_completions(len(tiny_policy.tokenizer), [6, 6, 6], [5, 3, 1], seed=3)
    batch = build_batch(comps, pad_token_id=tiny_policy.tokenizer.pad_token_id)
    with torch.no_grad():
        logp, ent = token_logprobs(tiny_policy.model, batch.input_ids, batch.attention_mask, start=6, temperature=0.7)
        ref_logp, ref_ent = reference(tiny_policy.model, batch.input_ids, batch.attention_mask, 6, temperature=0.7)
        none_ent = token_logprobs(tiny_policy.model, batch.input_ids, batch.attention_mask, start=6, return_entropy=False)[1]
    assert none_ent is None
    assert logp.shape == (3, 5)
    assert torch.allclose(logp.double(), ref_logp, atol=1e-5, rtol=0)
    assert torch.allclose(ent.double(), ref_ent, atol=1e-5, rtol=0)


def test_peft_model_and_gradients_reach_adapters(smollm2_tokenizer):
    base = build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer)
    peft = build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer, lora={"r": 2, "alpha": 4})
    comps = random_completions(len(smollm2_tokenizer), [4, 7], [3, 5], seed=4)
    batch = build_batch(comps, pad_token_id=smollm2_tokenizer.pad_token_id)
    with torch.no_grad():
        base_logp, _ = token_logprobs(base.model, batch.input_ids, batch.attention_mask, start=batch.start)
    logp, _ = token_logprobs(peft.model, batch.input_ids, batch.attention_mask, start=batch.start)
    assert torch.allclose(logp, base_logp, atol=1e-6)  # LoRA B starts at 0
    logp.sum().backward()
    lora_b = [p.grad for n, p in peft.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b)


def test_greedy_rollout_tokens_are_argmax_under_scoring(tiny_policy):
    """Generation (left-padded, batched) and scoring (right-padded) see the same positions: every greedy token
    scores the maximal log-prob."""
    tok = tiny_policy.tokenizer
    prompts = encode_prompts(tok, [[{"role": "user", "content": q}] for q in ["hi", "What is the capital of France?"]])
    comps = HFGenerateBackend(tiny_policy.model, tok, max_batch_size=4).generate(
        prompts, num_samples=1, max_new_tokens=6, temperature=0.0, seed=0
    )
    batch = build_batch(comps, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(tiny_policy.model, batch.input_ids, batch.attention_mask, start=batch.start)
        for row, i in enumerate(batch.order):
            ids = torch.tensor([comps[i].prompt_ids + comps[i].completion_ids])
            lsm = torch.log_softmax(tiny_policy.model(ids).logits[0].double(), -1)
            P, C = len(comps[i].prompt_ids), len(comps[i].completion_ids)
            best = lsm[P - 1 : P + C - 1].max(-1).values
            assert torch.allclose(logp[row, :C].double(), best, atol=1e-5)


def test_build_batch_layout():
    comps = [
        Completion(0, [1, 2], [3], "", True),
        Completion(0, [1, 2], [4, 5, 6], "", False),
        Completion(1, [7, 8, 9, 10], [], "", False),
        Completion(1, [7], [11, 12], "", True),
    ]
    b = build_batch(comps, pad_token_id=0)
    assert b.order == [1, 2, 0, 3]  # longest first, stable
    assert b.input_ids.tolist() == [[1, 2, 4, 5, 6], [7, 8, 9, 10, 0], [1, 2, 3, 0, 0], [7, 11, 12, 0, 0]]
    assert b.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert b.start.tolist() == [2, 4, 2, 1]
    assert b.completion_mask.tolist() == [[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]
    unsorted = build_batch(comps, pad_token_id=0, sort_by_length=False)
    assert unsorted.order == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least one"):
        build_batch([], pad_token_id=0)
    with pytest.raises(ValueError, match="empty prompt"):
        build_batch([Completion(0, [], [1], "", True)], pad_token_id=0)


def test_plan_micro_batches_respects_token_budget():
    lengths = [5, 20, 7, 3, 20, 9, 1]
    groups = plan_micro_batches(lengths, max_tokens=40)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert groups[0] == [1, 4]
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 40
    assert plan_micro_batches([50, 2], max_tokens=10) == [[0], [1]]


def test_bad_inputs(tiny_policy):
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="start"):
        token_logprobs(tiny_policy.model, ids, torch.ones_like(ids), start=0)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        token_logprobs(tiny_policy.model, ids, torch.ones(2, 4, dtype=torch.long), start=1)


def test_gradient_checkpointing_gives_the_same_gradients(smollm2_tokenizer):
    comps = random_completions(len(smollm2_tokenizer), [4, 6], [5, 2], seed=6)
    batch = build_batch(comps, pad_token_id=smollm2_tokenizer.pad_token_id)
    grads = []
    for gc in (False, True):
        policy = build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer, gradient_checkpointing=gc)
        policy.model.train()
        logp, _ = token_logprobs(policy.model, batch.input_ids, batch.attention_mask, start=batch.start)
        (logp * batch.completion_mask).sum().backward()
        grads.append({n: p.grad for n, p in policy.model.named_parameters()})
    for n, g in grads[0].items():
        assert g.abs().sum() > 0 and torch.allclose(g, grads[1][n], atol=1e-6, rtol=1e-5), n


def test_compiled_forward_matches_eager_values_and_gradients(tiny_policy, monkeypatch):
    """train.compile's path (torch.compile of the decoder block and the LM-head chunks, dynamic shapes): same
    log-probs, entropies and gradients as eager up to float32 round-off, across micro-batch shapes without
    recompiling per shape."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1, raising=False)  # no worker pool left behind in the test run
    model = tiny_policy.model
    for lens in ([(5, 7), (3, 9), (6, 2)], [(4, 11), (8, 3)]):
        batch = build_batch(random_completions(500, [p for p, _ in lens], [c for _, c in lens], seed=len(lens)),
                            pad_token_id=0)
        out = {}
        for compiled in (False, True):
            model.zero_grad()
            logp, ent = token_logprobs(model, batch.input_ids, batch.attention_mask, start=batch.start,
                                       chunk_tokens=5, compile=compiled)
            (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
            out[compiled] = (logp.detach(), ent, [p.grad.clone() for p in model.parameters()])
        torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-5)
        for a, b in zip(out[True][2], out[False][2]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.zero_grad()
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] >= 1  # something was compiled ...
    # ... for this forward only, the layers restored exactly (a leftover `_compiled_call_impl = None` in their
    # __dict__ failed a guard of the compiled decode step and recompiled it after the first training step)
    assert all("_compiled_call_impl" not in layer.__dict__ for layer in model.model.layers)


def _cost(groups, lengths, overhead):
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def test_plan_micro_batches_is_the_cheapest_split():
    """Against brute force over every split of the longest-first order (small n): the planned micro-batches have
    the least padded tokens + overhead per micro-batch among the splits within budget, and never cost more than
    filling each micro-batch up to the budget (the previous greedy planner)."""
    import itertools
    import random

    rng = random.Random(0)
    for trial in range(40):
        n = rng.randint(1, 9)
        lengths = [rng.choice([rng.randint(1, 10), rng.randint(20, 60)]) for _ in range(n)]
        max_tokens, overhead = rng.choice([60, 120, 400]), rng.choice([0, 10, 50])
        groups = plan_micro_batches(lengths, max_tokens, overhead_tokens=overhead)
        order = sorted(range(n), key=lambda i: (-lengths[i], i))
        assert [i for g in groups for i in g] == order
        assert all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= max_tokens for g in groups)
        best = None
        for cuts in itertools.product([0, 1], repeat=n - 1):
            split, cur = [], [order[0]]
            for c, i in zip(cuts, order[1:]):
                if c:
                    split.append(cur)
                    cur = []
                cur.append(i)
            split.append(cur)
            if all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= max_tokens for g in split):
                cost = _cost(split, lengths, overhead)
                best = cost if best is None else min(best, cost)
        assert _cost(groups, lengths, overhead) == best
        greedy: list[list[int]] = []
        for i in order:
            if greedy and (len(greedy[-1]) + 1) * lengths[greedy[-1][0]] <= max_tokens:
                greedy[-1].append(i)
            else:
                greedy.append([i])
        assert _cost(groups, lengths, overhead) <= _cost(greedy, lengths, overhead)


def test_compiled_graphs_counts_each_new_graph_once():
    from mgs.rl.logprobs import compiled_graphs

    double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    counts = [compiled_graphs()]
    for n in (3, 3, 5, 5):  # a new shape under dynamic=False is a recompile; a repeated one is not
        double(torch.ones(n))
        counts.append(compiled_graphs())
    assert [b - a for a, b in zip(counts, counts[1:])] == [1, 0, 1, 0]
