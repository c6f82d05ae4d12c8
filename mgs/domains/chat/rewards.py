"""Chat reward models: a small registry of scorer kinds behind one batched interface.

The chat domain has no verifiable answer, so its reward comes from a scorer. Each kind turns a batch of
(prompt messages, response text, optional reference answer) into one `RewardResult` per sample and never raises on
model output (a failure becomes `score=None` with the reason in `info["error"]`):

- `hf-classifier`: a local Hugging Face sequence-classification reward model (e.g. Skywork-Reward-V2-Llama-3.1-8B);
  it reads prompt + response through its own chat template and the score is `logits[0]`.
- `callable`: any Python function `fn(prompts, responses) -> list[float | None]`, named "module:function".
- `http`: a scoring endpoint, POST {"prompts", "responses"} -> {"scores"} (stdlib urllib, timeout, retries).
- `similarity-proxy` (in `similarity.py`): the offline default, a MiniLM similarity to a reference answer.

Build one with `build_reward_model(kind, **params)`; `REWARD_MODELS.names()` lists the kinds.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from mgs.domains.base import Message, RewardResult
from mgs.registry import Registry

log = logging.getLogger(__name__)

Conversation = Sequence[Message]


@runtime_checkable
class RewardModel(Protocol):
    """What the chat domain needs from a scorer. `proxy` is True when the score only approximates a preference
    judgement (metrics are then labelled `proxy_`); `needs_reference` when it can't score without a reference."""

    name: str
    proxy: bool
    needs_reference: bool

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str],
              references: Sequence[str | None]) -> list[RewardResult]:
        ...


REWARD_MODELS: Registry[type] = Registry("chat reward model")


def build_reward_model(kind: str, **params: Any) -> RewardModel:
    """The reward model registered as `kind`, built with `params` (its constructor's keyword arguments)."""
    return REWARD_MODELS.get(kind)(**params)


def clean_text(text: Any) -> str:
    """A response as text that every tokenizer accepts: lone surrogates and other unencodable code points become
    U+FFFD. Non-strings are an error of the caller, reported per sample by `as_float_score`'s users."""
    return str(text).encode("utf-8", "replace").decode("utf-8")


def as_bool(value: Any) -> bool:
    """A flag from config or a command line ("true"/"false"/"1"/"0" strings included)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected a boolean (true/false), got {value!r}")
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def unscorable_all(reason: str, n: int) -> list[RewardResult]:
    """`n` separate unscorable results (separate objects: callers may annotate them)."""
    return [RewardResult.unscorable(reason) for _ in range(n)]


def as_float_score(value: Any, **info: Any) -> RewardResult:
    """A raw score from an external scorer as a `RewardResult`: None stays None, non-numbers and non-finite numbers
    become unscorable with the reason."""
    if value is None:
        return RewardResult.unscorable("the scorer returned None for this sample", **info)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return RewardResult.unscorable(f"the scorer returned a non-number {value!r:.80}", **info)
    if not math.isfinite(value):
        return RewardResult.unscorable(f"the scorer returned a non-finite score {value!r}", **info)
    return RewardResult(score=float(value), info=info)


# ---------------------------------------------------------------------------------------------------------------
@REWARD_MODELS.register("hf-classifier")
class HFClassifierReward:
    """A local Hugging Face `AutoModelForSequenceClassification` reward model, e.g. Skywork-Reward-V2-Llama-3.1-8B.

    Each sample is `tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}])`,
    tokenised without extra special tokens (the template already has them), and its score is `logits[0]` at the
    model's own pooling position. Batches are right-padded with the pad token, which the model's "rightmost
    non-pad token" pooling handles exactly as an unpadded forward. A conversation longer than `max_length` tokens
    has its response cut (keeping its start), noted in `info["truncated"]`. The model loads on the first `score`."""

    proxy = False
    needs_reference = False

    def __init__(self, path: str, device: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 8192, name: str | None = None) -> None:
        self.path = str(path)
        self.name = name or f"hf-classifier:{self.path}"
        self.device = device
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError(f"hf-classifier: batch_size must be >= 1 and max_length >= 8, got {batch_size}, "
                             f"{max_length}")
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.dtype
        if dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        model = AutoModelForSequenceClassification.from_pretrained(self.path, dtype=dtype)
        config = model.config.get_text_config()
        if config.pad_token_id is None and self._tokenizer.pad_token_id is not None:
            config.pad_token_id = self._tokenizer.pad_token_id
        if config.pad_token_id is None:
            log.warning("hf-classifier %s has no pad token: scoring one sample at a time", self.path)
            self.batch_size = 1
        self._pad_id = config.pad_token_id
        self._model = model.to(device).eval()
        self._device = device

    def _ids(self, prompt: Conversation, response: str) -> tuple[list[int], bool]:
        tok = self._tokenizer
        conversation = [dict(m) for m in prompt] + [{"role": "assistant", "content": response}]

        def encode(resp: str) -> list[int]:
            conversation[-1]["content"] = resp
            text = tok.apply_chat_template(conversation, tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]

        ids = encode(response)
        if len(ids) <= self.max_length:
            return ids, False
        overflow = len(ids) - self.max_length
        response_ids = tok(response, add_special_tokens=False)["input_ids"]
        keep = max(0, len(response_ids) - overflow - 8)
        ids = encode(tok.decode(response_ids[:keep]))
        return ids[: self.max_length], True

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str],
              references: Sequence[str | None] | None = None) -> list[RewardResult]:
        import torch

        if self._model is None:
            self._load()
        results: list[RewardResult | None] = [None] * len(responses)
        encoded: list[tuple[int, list[int], bool]] = []
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            try:
                ids, truncated = self._ids(prompt, clean_text(response))
                encoded.append((i, ids, truncated))
            except Exception as err:  # a template or tokenizer failure on this sample only
                results[i] = RewardResult.unscorable(f"hf-classifier could not encode the sample: {err!r:.200}")
        encoded.sort(key=lambda item: len(item[1]))  # similar lengths together: less padding
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start: start + self.batch_size]
            width = max(len(ids) for _, ids, _ in batch)
            pad = self._pad_id if self._pad_id is not None else 0
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for _, ids, _ in batch], device=self._device)
            attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for _, ids, _ in batch],
                                          device=self._device)
            try:
                with torch.no_grad():
                    logits = self._model(input_ids=input_ids, attention_mask=attention_mask).logits
                scores = logits[:, 0].float().tolist()
            except Exception as err:
                for i, _, _ in batch:
                    results[i] = RewardResult.unscorable(f"hf-classifier forward failed: {err!r:.200}")
                continue
            for (i, ids, truncated), value in zip(batch, scores):
                results[i] = as_float_score(value, num_tokens=len(ids), truncated=truncated)
        return [r if r is not None else RewardResult.unscorable("not scored") for r in results]


# ---------------------------------------------------------------------------------------------------------------
def import_function(spec: str) -> Callable[..., Any]:
    """The function named by "package.module:function" (a clear error when the spec is wrong)."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected a function as 'module:function' (e.g. 'my_rewards:score'), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} of {spec!r}: {err}; is it on PYTHONPATH?") from err
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})")
    if not callable(fn):
        raise ValueError(f"{spec!r} is not callable")
    return fn


@REWARD_MODELS.register("callable")
class CallableReward:
    """Any Python function `fn(prompts: list[messages], responses: list[str]) -> list[float | None]`, given as
    "module:function" (or as the function itself). If the function accepts a `references` keyword it also gets
    the reference answers (None where a sample has none). An exception inside it makes the whole batch
    unscorable with the error text (it is the scorer failing, not the model output)."""

    needs_reference = False

    def __init__(self, function: str | Callable[..., Any], proxy: bool = False, name: str | None = None) -> None:
        self.fn = import_function(function) if isinstance(function, str) else function
        if not callable(self.fn):
            raise ValueError(f"callable reward: {function!r} is not callable")
        self.name = name or (function if isinstance(function, str) else getattr(function, "__qualname__", "callable"))
        self.proxy = as_bool(proxy)
        try:
            params = inspect.signature(self.fn).parameters
            self._takes_references = "references" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            self._takes_references = False

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str],
              references: Sequence[str | None] | None = None) -> list[RewardResult]:
        prompts = [[dict(m) for m in p] for p in prompts]
        responses = [clean_text(r) for r in responses]
        kwargs = {"references": list(references or [None] * len(responses))} if self._takes_references else {}
        try:
            scores = list(self.fn(prompts, responses, **kwargs))
        except Exception as err:
            return unscorable_all(f"reward function {self.name} raised {err!r:.300}", len(responses))
        if len(scores) != len(responses):
            return unscorable_all(f"reward function {self.name} returned {len(scores)} scores for "
                                  f"{len(responses)} responses", len(responses))
        return [as_float_score(s) for s in scores]


# ---------------------------------------------------------------------------------------------------------------
@REWARD_MODELS.register("http")
class HTTPReward:
    """A scoring endpoint: POST JSON {"prompts": [messages...], "responses": [str...]} (plus "references" when
    `send_references`) and expect {"scores": [float | null, ...]} of the same length. Requests are sent in chunks
    of `batch_size`; a timeout, connection error or 5xx/429 answer is retried `retries` times with exponential
    backoff; after that (or on another 4xx) the chunk is unscorable with the error text."""

    needs_reference = False

    def __init__(self, url: str, timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 0.5,
                 batch_size: int = 64, headers: dict[str, str] | None = None, send_references: bool = False,
                 proxy: bool = False, name: str | None = None) -> None:
        if not str(url).startswith(("http://", "https://")):
            raise ValueError(f"http reward: url must start with http:// or https://, got {url!r}")
        self.url = str(url)
        self.name = name or f"http:{self.url}"
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.batch_size = int(batch_size)
        if self.timeout_s <= 0 or self.retries < 0 or self.batch_size < 1:
            raise ValueError("http reward: need timeout_s > 0, retries >= 0 and batch_size >= 1")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_references = as_bool(send_references)
        self.proxy = as_bool(proxy)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode("utf-8")
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    return json.loads(reply.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                last_error = err
                if err.code < 500 and err.code != 429:
                    break  # the request itself is wrong: retrying won't help
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last_error = err
        raise RuntimeError(f"POST {self.url} failed after {attempt + 1} attempt(s): {last_error!r:.300}")

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str],
              references: Sequence[str | None] | None = None) -> list[RewardResult]:
        results: list[RewardResult] = []
        for start in range(0, len(responses), self.batch_size):
            stop = start + self.batch_size
            payload: dict[str, Any] = {"prompts": [[dict(m) for m in p] for p in prompts[start:stop]],
                                       "responses": [clean_text(r) for r in responses[start:stop]]}
            if self.send_references:
                payload["references"] = list(references[start:stop]) if references else [None] * len(payload["responses"])
            n = len(payload["responses"])
            try:
                reply = self._post(payload)
                scores = reply["scores"] if isinstance(reply, dict) else None
                if not isinstance(scores, list) or len(scores) != n:
                    raise ValueError(f"expected {{'scores': [{n} numbers]}}, got {str(reply)[:200]}")
            except Exception as err:
                results.extend(unscorable_all(f"http reward: {err}", n))
                continue
            results.extend(as_float_score(s) for s in scores)
        return results
