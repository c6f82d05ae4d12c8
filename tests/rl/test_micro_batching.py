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
