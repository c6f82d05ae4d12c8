"""Micro-batch defaults per device: 16 samples on CPU, 32768 tokens on CUDA; explicit settings win."""

from types import SimpleNamespace

import pytest

from mgs.config import ConfigError, load_config
from mgs.rl.trainer import micro_batching


@pytest.mark.parametrize("size, unit, on_cuda, expected", [
    (0, "auto", False, (16, "samples")),
    (0, "auto", True, (32768, "tokens")),
    (8, "auto", False, (8, "samples")),
    (8, "auto", True, (8, "tokens")),
    (0, "tokens", False, (32768, "tokens")),
    (0, "samples", True, (16, "samples")),
    (4096, "tokens", True, (4096, "tokens")),
])
def test_micro_batching(size, unit, on_cuda, expected):
    assert micro_batching(SimpleNamespace(micro_batch_size=size, micro_batch_unit=unit), on_cuda) == expected


def test_buffer_dtype_param_is_the_default_and_validated():
    assert load_config(None, []).surgery.buffer_dtype == "param"
    with pytest.raises(ConfigError, match="buffer_dtype"):
        load_config(None, ["surgery.buffer_dtype=int8"])


def test_token_budget_from_memory():
    from mgs.rl.trainer import TokenBudget

    gb = 1 << 30
    b = TokenBudget(32768)
    # 16 GB of activations for a 32768-token micro-batch (0.5 MB/token), 2 GB held before, 80 GB available:
    # 0.6 * 80 - 2 = 46 GB fits 94208 tokens (4096-rounded), but growth is capped at 2x per step
    assert b.observe(2 * gb, 18 * gb, 32768, 80 * gb) == 65536
    assert b.observe(2 * gb, 34 * gb, 65536, 80 * gb) == 94208
    # memory got tight (another process): shrink at once, never below the floor
    assert b.observe(2 * gb, 34 * gb, 65536, 12 * gb) == 8192  # 0.6 * 12 - 2 = 5.2 GB: 10649 tokens
    assert b.observe(2 * gb, 34 * gb, 65536, 3 * gb) == 4096
    assert b.observe(2 * gb, 2 * gb, 65536, 80 * gb) == 4096  # no measurement: unchanged
