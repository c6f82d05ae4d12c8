"""Rollout backends: prompts (token ids) -> sampled completions (token ids + decoded text).

Generation dominates RL time on small models, so the HF backend is built for throughput while staying exact:
rows (prompt x sample) are sorted by prompt length and cut into batches of `max_batch_size` (less padding, and a
batch of long answers doesn't hold short ones back); on CUDA it uses a static KV cache with compiled decoding,
sized once for the worst case so later calls don't recompile, and by default ONE batch for the whole call when its
KV cache fits a share of free GPU memory (a decode step of a small model is launch-bound: 512 rows cost about what
256 do, so one batch halves the rollout time of two). Prompts stay token ids end to end: nothing is
re-encoded, each completion is decoded once. Sampling is reproducible for a seed (a forked RNG; the global RNG is
left untouched). Backends live in `ROLLOUT_BACKENDS` so a vLLM backend can be added with the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from mgs.registry import Registry
from mgs.rl.model import model_device


@dataclass
class Completion:
    """One sampled answer. `completion_ids` exclude padding and end with the EOS token iff `finished`."""

    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finished: bool


def check_generate_args(prompt_ids: list[list[int]], num_samples: int, max_new_tokens: int, temperature: float,
                        top_p: float) -> None:
    """The argument rules every backend's `generate` enforces, with errors that say what to pass instead."""
    if num_samples <= 0 or max_new_tokens <= 0:
        raise ValueError(f"num_samples and max_new_tokens must be positive, got {num_samples}, {max_new_tokens}")
    if temperature < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt: every prompt needs at least one token (encode it with encode_prompts)")


def left_pad(prompts: list[list[int]], width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, width] with every prompt ending at the last column, and its attention mask [B, width]."""
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attention_mask[i, width - len(p) :] = 1
    return input_ids, attention_mask


def to_completions(tokenizer, eos_ids: set[int], prompt_ids: list[list[int]], rows: list[int],
                   generated: list[list[int]]) -> list[Completion]:
    """Completions from each row's generated ids (row r sampled from prompt rows[r]): cut at the first EOS (kept),
    decoded once without special tokens."""
    split = [split_at_eos(g, eos_ids) for g in generated]
    texts = tokenizer.batch_decode([ids for ids, _ in split], skip_special_tokens=True)
    return [Completion(p, list(prompt_ids[p]), ids, text, finished)
            for p, (ids, finished), text in zip(rows, split, texts)]


class RolloutBackend(Protocol):
    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        num_samples: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int,
    ) -> list[Completion]:
        """`num_samples` consecutive completions per prompt, in prompt order; temperature 0 = greedy."""
        ...


ROLLOUT_BACKENDS: Registry[type] = Registry("rollout backend")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def split_at_eos(row: Sequence[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Generated ids -> (ids up to and including the first EOS, finished). Without an EOS the row is kept whole."""
    for i, t in enumerate(row):
        if t in eos_ids:
            return list(row[: i + 1]), True
    return list(row), False


@ROLLOUT_BACKENDS.register("hf")
class HFGenerateBackend:
    """Rollouts with transformers' `generate`.

    cache_implementation: "static" (preallocated KV cache; with `compile` on CUDA the decode step is compiled and
    CUDA-graphed by transformers) or "dynamic". Defaults: static + compile on CUDA, dynamic on CPU.
    length_multiple: prompts are left-padded to a multiple of this so the static cache and compiled graphs see few
    distinct shapes (default 64 on CUDA, 1 on CPU). With compile on, all batches of a call get the same number of
    rows (the last one filled up with copies that are dropped), so the compiled decode step is reused.
    max_batch_size: rows (prompt x sample) per `generate` call. Default on CPU: 32. Default on CUDA: as many rows as
    have a KV cache within `kv_memory_fraction` of the free GPU memory (at most `MAX_AUTO_ROWS`), decided on the
    first call and only lowered later (a stable row count keeps the compiled decode step).
    """

    MAX_AUTO_ROWS = 1024

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        max_batch_size: int | None = None,
        cache_implementation: str | None = None,
        compile: bool | None = None,
        length_multiple: int | None = None,
        kv_memory_fraction: float = 0.3,
    ) -> None:
        on_cuda = model_device(model).type == "cuda"
        self.auto_batch = max_batch_size is None and on_cuda
        max_batch_size = max_batch_size or (self.MAX_AUTO_ROWS if on_cuda else 32)
        if max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        if not 0.0 < kv_memory_fraction <= 1.0:
            raise ValueError(f"kv_memory_fraction must be in (0, 1], got {kv_memory_fraction}")
        self.kv_memory_fraction = kv_memory_fraction
        cache_implementation = cache_implementation or ("static" if on_cuda else "dynamic")
        if cache_implementation not in ("static", "dynamic"):
            raise ValueError(f"cache_implementation must be 'static' or 'dynamic', got {cache_implementation!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.cache_implementation = cache_implementation
        self.compile = bool(on_cuda and cache_implementation == "static") if compile is None else bool(compile)
        self.length_multiple = length_multiple or (64 if on_cuda else 1)
        self.pad_token_id = tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; load the policy with mgs.rl.model.load_policy")
        self.eos_ids = self._eos_ids(model, tokenizer)
        self._max_cache_len = 0  # grows only: keeps the static cache (and compiled graphs) stable across calls

    @staticmethod
    def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for e in (gc_eos, tokenizer.eos_token_id):
            if isinstance(e, int):
                ids.add(e)
            elif e is not None:
                ids.update(int(x) for x in e)
        if not ids:
            raise ValueError("no EOS token id in the tokenizer or generation config; generation could not stop")
        return ids

    def _generation_config(self, *, max_new_tokens: int, temperature: float, top_p: float, prompt_len: int):
        from transformers import GenerationConfig

        greedy = temperature == 0.0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_token_id,
            use_cache=True,
            cache_implementation=self.cache_implementation,
            disable_compile=not self.compile,
        )
        if not greedy:
            # top_k=0 turns off transformers' default top-k of 50: RL samples from the full distribution
            kwargs.update(top_k=0, top_p=top_p, temperature=temperature)
        if self.cache_implementation == "static":
            self._max_cache_len = max(self._max_cache_len, prompt_len + max_new_tokens)
            kwargs["max_cache_len"] = self._max_cache_len
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None:
            kwargs["bos_token_id"] = bos
        return GenerationConfig(**kwargs)

    def reserve(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Size the static cache up front for prompts of up to `prompt_tokens` tokens (see GraphDecodeBackend)."""
        self._max_cache_len = max(self._max_cache_len,
                                  _round_up(prompt_tokens, self.length_multiple) + max_new_tokens)

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes of one token in one row: 2 (K, V) x layers x KV heads x head dim x element size."""
        cfg = getattr(self.model, "config", None)
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        layers = getattr(cfg, "num_hidden_layers", None)
        heads = getattr(cfg, "num_attention_heads", None)
        if not layers or not heads:
            raise ValueError("the model config has no num_hidden_layers / num_attention_heads; pass max_batch_size")
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        element = next(self.model.parameters()).element_size()
        return 2 * layers * kv_heads * head_dim * element

    def fit_batch_rows(self, cache_len: int, free_bytes: int) -> int:
        """Rows whose static KV cache of `cache_len` tokens fits `kv_memory_fraction` of `free_bytes` (>= 1,
        <= the current max_batch_size)."""
        rows = int(self.kv_memory_fraction * free_bytes) // (self.kv_bytes_per_token() * max(cache_len, 1))
        return max(1, min(self.max_batch_size, rows))

    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Row indices grouped into as few batches of <= max_batch_size rows as possible, of equal size (+-1) and
        similar prompt length (longest first)."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        n_batches = -(-len(order) // self.max_batch_size)
        size, extra = divmod(len(order), n_batches)
        batches, at = [], 0
        for b in range(n_batches):
            step = size + (1 if b < extra else 0)
            batches.append(order[at : at + step])
            at += step
        return batches

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        num_samples: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        seed: int,
    ) -> list[Completion]:
        check_generate_args(prompt_ids, num_samples, max_new_tokens, temperature, top_p)
        if not prompt_ids:
            return []
        rows = [p for p in range(len(prompt_ids)) for _ in range(num_samples)]  # row -> prompt index
        device = model_device(self.model)
        generated: list[list[int] | None] = [None] * len(rows)
        was_training = self.model.training
        self.model.eval()
        fork_devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(seed)
                if self.auto_batch and device.type == "cuda":
                    width = _round_up(max(len(p) for p in prompt_ids), self.length_multiple)
                    cache_len = max(self._max_cache_len, width + max_new_tokens)
                    self.max_batch_size = self.fit_batch_rows(cache_len, torch.cuda.mem_get_info(device)[0])
                batches = self.plan_batches([len(prompt_ids[r]) for r in rows])
                fixed_rows = max(len(b) for b in batches) if self.compile else None
                for batch in batches:
                    prompts = [prompt_ids[rows[i]] for i in batch]
                    outs = self._generate_batch(prompts, device, max_new_tokens, temperature, top_p, fixed_rows)
                    for row, ids in zip(batch, outs):
                        generated[row] = ids
        finally:
            self.model.train(was_training)
        return to_completions(self.tokenizer, self.eos_ids, prompt_ids, rows, generated)  # type: ignore[arg-type]

    def _generate_batch(
        self,
        prompts: list[list[int]],
        device: torch.device,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        rows: int | None = None,
    ) -> list[list[int]]:
        """Left-pad and generate; `rows` > len(prompts) fills the batch up with copies (fixed compiled shapes)."""
        n_real = len(prompts)
        if rows is not None and rows > n_real:
            prompts = prompts + [prompts[-1]] * (rows - n_real)
        width = _round_up(max(len(p) for p in prompts), self.length_multiple)
        input_ids, attention_mask = left_pad(prompts, width, self.pad_token_id)
        config = self._generation_config(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, prompt_len=width
        )
        sequences = self.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
        )
        return sequences[:n_real, width:].tolist()


# registers the experimental "graph" backend here, where config validation reads the registry
import mgs.rl.fast_decode  # noqa: E402,F401
