"""The "graph" rollout backend (own decode loop on a StaticCache): greedy tokens equal plain per-prompt
`model.generate`, EOS / finished / padding bookkeeping, seeded sampling that leaves the global RNG alone, and
top-p sampling whose frequencies match the renormalised nucleus."""

from __future__ import annotations

import pytest
import torch
from rollout_helpers import reference_greedy

from mgs.rl.fast_decode import GraphDecodeBackend, sample_next
from mgs.rl.model import build_tiny_policy
from mgs.rl.rollout import ROLLOUT_BACKENDS


@pytest.mark.parametrize(
    "length_multiple,row_multiple,max_batch_size,check_every",
    [(1, 1, None, 16), (8, 3, None, 1), (4, 1, 3, 5)],  # padding columns, filler rows, several batches
)
def test_greedy_equals_per_prompt_generate(
    eos_policy, prompts, length_multiple, row_multiple, max_batch_size, check_every
):
    max_new_tokens = 12
    ref = reference_greedy(eos_policy, prompts, max_new_tokens)
    assert {f for _, f in ref} == {True, False}  # some rows stop at EOS early, some run out
    backend = GraphDecodeBackend(
        eos_policy.model, eos_policy.tokenizer, length_multiple=length_multiple, row_multiple=row_multiple,
        max_batch_size=max_batch_size, check_every=check_every,
    )
    for _ in range(2):  # the second call reuses the cache (reset in place)
        got = backend.generate(prompts, num_samples=2, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
        assert [c.prompt_index for c in got] == [0, 0, 1, 1, 2, 2, 3, 3]
        for c in got:
            assert c.prompt_ids == prompts[c.prompt_index]
            assert (c.completion_ids, c.finished) == ref[c.prompt_index]


def test_cache_kept_across_calls_and_grows_only(eos_policy, prompts):
    backend = GraphDecodeBackend(eos_policy.model, eos_policy.tokenizer)
    backend.generate(prompts, num_samples=1, max_new_tokens=4, temperature=0.0, seed=0)
    cache, shape = backend._cache, backend._cache_shape
    assert shape == (4, max(len(p) for p in prompts) + 4)
    backend.generate(prompts, num_samples=1, max_new_tokens=3, temperature=0.0, seed=0)  # shorter: same cache
    assert backend._cache is cache
    backend.generate(prompts[:1], num_samples=2, max_new_tokens=4, temperature=0.0, seed=0)  # fewer rows: new
    assert backend._cache is not cache and backend._cache_shape == (2, shape[1])


def test_reuse_rows_fills_smaller_batches_into_the_kept_cache(eos_policy, prompts):
    """With reuse_rows (the default when compiled) a call with fewer rows decodes in the kept cache, padded with
    filler rows, so the compiled graph's batch shape stays the same; the real rows' tokens are unchanged."""
    max_new_tokens = 12
    ref = reference_greedy(eos_policy, prompts, max_new_tokens)
    backend = GraphDecodeBackend(eos_policy.model, eos_policy.tokenizer, reuse_rows=True)
    backend.generate(prompts, num_samples=2, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    cache, shape = backend._cache, backend._cache_shape
    assert shape[0] == 8
    for subset in ([1], [3, 0], [2, 1, 0]):  # 1-3 prompts x 1 sample: 1-3 real rows of the 8
        got = backend.generate([prompts[i] for i in subset], num_samples=1, max_new_tokens=max_new_tokens,
                               temperature=0.0, seed=0)
        assert backend._cache is cache and backend._cache_shape == shape
        assert [(c.completion_ids, c.finished) for c in got] == [ref[i] for i in subset]
    off = GraphDecodeBackend(eos_policy.model, eos_policy.tokenizer)  # CPU default: eager, no reuse
    assert not off.reuse_rows
    off.generate(prompts, num_samples=2, max_new_tokens=4, temperature=0.0, seed=0)
    off.generate(prompts[:1], num_samples=1, max_new_tokens=4, temperature=0.0, seed=0)
    assert off._cache_shape[0] == 1


def test_completion_bookkeeping_under_sampling(sampling_eos_policy, prompts):
    tok = sampling_eos_policy.tokenizer
    backend = ROLLOUT_BACKENDS.get("graph")(sampling_eos_policy.model, tok, check_every=3)
    got = backend.generate(prompts, num_samples=3, max_new_tokens=10, temperature=1.0, seed=1)
    assert len(got) == 12 and [c.prompt_index for c in got] == [i for i in range(4) for _ in range(3)]
    assert any(c.finished for c in got) and any(not c.finished for c in got)
    for c in got:
        assert c.completion_ids
        if c.finished:
            assert c.completion_ids[-1] == tok.eos_token_id and tok.eos_token_id not in c.completion_ids[:-1]
        else:
            assert len(c.completion_ids) == 10 and tok.eos_token_id not in c.completion_ids
        assert tok.pad_token_id not in c.completion_ids
        assert c.text == tok.decode(c.completion_ids, skip_special_tokens=True)


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny_policy, prompts):
    backend = GraphDecodeBackend(tiny_policy.model, tiny_policy.tokenizer)
    tiny_policy.model.train()
    torch.manual_seed(123)
    a = backend.generate(prompts, num_samples=2, max_new_tokens=6, temperature=1.0, seed=7)
    after = torch.rand(3)
    torch.manual_seed(123)
    b = backend.generate(prompts, num_samples=2, max_new_tokens=6, temperature=1.0, seed=7)
    assert torch.equal(after, torch.rand(3))
    c = backend.generate(prompts, num_samples=2, max_new_tokens=6, temperature=1.0, seed=8)
    ids = lambda cs: [x.completion_ids for x in cs]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert ids(a)[0] != ids(a)[1]
    assert tiny_policy.model.training  # train mode restored


def test_full_distribution_and_tiny_top_p_is_greedy(tiny_policy, prompts):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    backend = GraphDecodeBackend(model, tok)
    got = backend.generate(prompts[:1], num_samples=32, max_new_tokens=1, temperature=1.0, seed=0)
    with torch.no_grad():
        logits = model(torch.tensor([prompts[0]])).logits[0, -1]
    assert max((logits > logits[c.completion_ids[0]]).sum().item() for c in got) > 50  # no hidden top-k
    nucleus = backend.generate(prompts, num_samples=2, max_new_tokens=5, temperature=1.0, top_p=1e-6, seed=0)
    greedy = backend.generate(prompts, num_samples=2, max_new_tokens=5, temperature=0.0, seed=0)
    assert [c.completion_ids for c in nucleus] == [c.completion_ids for c in greedy]


@pytest.mark.parametrize(
    "temperature,top_p,expected",
    [
        (1.0, 1.0, [0.5, 0.3, 0.15, 0.05]),
        (1.0, 0.7, [0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]),  # nucleus {0, 1}: 0.5 < 0.7 <= 0.8
        (1.0, 0.85, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        (0.5, 1.0, [0.25 / 0.365, 0.09 / 0.365, 0.0225 / 0.365, 0.0025 / 0.365]),  # p^2 renormalised
    ],
)
def test_sample_next_frequencies(temperature, top_p, expected):
    n = 40_000
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # shuffled vocabulary order: the sort must map back
    logits = probs.log().expand(n, 4).contiguous()
    noise = torch.empty(n, 4).exponential_(generator=torch.Generator().manual_seed(0))
    tokens = sample_next(logits, noise, temperature, top_p)
    freq = torch.bincount(tokens, minlength=4).float() / n
    want = torch.tensor(expected)[[3, 0, 2, 1]]  # expected is in descending-probability order
    assert torch.allclose(freq, want, atol=0.01), (freq, want)
    assert torch.equal(sample_next(logits[:2], None, 0.0, 1.0), torch.tensor([1, 1]))


def test_errors(tiny_policy, prompts):
    backend = GraphDecodeBackend(tiny_policy.model, tiny_policy.tokenizer)
    assert backend.generate([], num_samples=2, max_new_tokens=2, temperature=1.0, seed=0) == []
    with pytest.raises(ValueError, match="empty prompt"):
        backend.generate([[]], num_samples=1, max_new_tokens=2, temperature=1.0, seed=0)
    with pytest.raises(ValueError, match="top_p"):
        backend.generate(prompts, num_samples=1, max_new_tokens=2, temperature=1.0, top_p=0.0, seed=0)
    with pytest.raises(ValueError, match="check_every"):
        GraphDecodeBackend(tiny_policy.model, tiny_policy.tokenizer, check_every=0)


def test_peft_and_gradient_checkpointing_policies_left_in_train_mode(smollm2_tokenizer, prompts, eos_policy):
    """LoRA starts as the identity and checkpointing changes no numbers: the graph backend decodes both like the
    plain policy (it switches to eval for decoding, so checkpointing doesn't drop the cache) and restores train mode."""
    ref = reference_greedy(eos_policy, prompts, 5)  # the plain seed-0 weights with the EOS-prone head
    eos_row = eos_policy.model.get_output_embeddings().weight[smollm2_tokenizer.eos_token_id]
    for kwargs in [{"lora": {"r": 2, "alpha": 4}}, {"gradient_checkpointing": True}]:
        policy = build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer, tie_word_embeddings=False, **kwargs)
        with torch.no_grad():
            policy.model.get_output_embeddings().weight[smollm2_tokenizer.eos_token_id] = eos_row
        policy.model.train()
        got = GraphDecodeBackend(policy.model, policy.tokenizer).generate(
            prompts, num_samples=1, max_new_tokens=5, temperature=0.0, seed=0
        )
        assert [(c.completion_ids, c.finished) for c in got] == ref
        assert policy.model.training


def test_cache_grows_geometrically_so_recompiles_stay_few(tiny_policy):
    from mgs.rl.fast_decode import GraphDecodeBackend

    backend = GraphDecodeBackend(tiny_policy.model, tiny_policy.tokenizer, length_multiple=64)
    sizes = [backend._cache_len_for(n) for n in (300, 200, 320, 330, 460, 470, 1000)]
    assert sizes == [300, 300, 512, 512, 512, 512, 1000]  # 320 > 300: at least 1.5 x 300 -> 512 (x64)
