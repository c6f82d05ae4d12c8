"""The training configuration: frozen dataclasses with help text, loaded from YAML + dotted CLI overrides.

Why one module: the config is the user's whole interface to `mgs train`, so it must say what each key means
(`help` metadata, printed by `mgs train --help-config` and in docs/training.md) and refuse bad input at load time
with an error naming the key and the allowed values (unknown keys get a "did you mean"). Allowed names of
strategies, surgery methods/granularities, domain kinds and rollout backends come from their registries, so
adding a variant never means editing this file. Components never receive the whole config: the trainer hands each
one its own section.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config value (or key) is wrong; the message names the key and says what is allowed."""


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with help text (and, for small fixed sets, its allowed values)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, tuple)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoraConfig:
    r: int = opt(0, "LoRA rank; 0 = full fine-tuning (every parameter trained).")
    alpha: float = opt(16.0, "LoRA scaling numerator (scale = alpha / r).")
    dropout: float = opt(0.0, "Dropout on the LoRA input.")
    target_modules: tuple[str, ...] = opt(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Module names that get LoRA adapters.",
    )


@dataclass(frozen=True)
class ModelConfig:
    name: str = opt(
        "smollm2-135m-instruct",
        "Policy model: an alias (smollm2-135m-instruct), a Hugging Face hub id, a local path, or "
        "`tiny:<family>` (a tiny random model built from a config, for tests).",
    )
    dtype: str = opt("float32", "Parameter dtype of the policy.", DTYPES)
    lora: LoraConfig = opt(LoraConfig(), "LoRA (peft) adapters instead of full fine-tuning.")
    gradient_checkpointing: bool = opt(False, "Recompute activations in backward (less memory, ~30% slower).")
    device: str = opt("auto", "Device: auto (cuda if available), cpu, cuda, cuda:N.")


@dataclass(frozen=True)
class DomainSpec:
    name: str = opt("", "Name of the domain in metrics and batches (unique).")
    kind: str = opt("", "Registered domain kind (mgs.domains.DOMAINS).")
    weight: float = opt(1.0, "Mixing proportion of this domain in a batch (normalised over the step's domains).")
    params: dict = opt({}, "Keyword arguments of the domain's constructor.")
    train_limit: int | None = opt(None, "At most this many training prompts (None = all).")
    eval_limit: int = opt(32, "Held-out prompts evaluated before/after training (0 = don't evaluate this domain).")


@dataclass(frozen=True)
class StageConfig:
    steps: int = opt(1, "Optimizer steps of this stage.")
    domains: dict = opt({}, "Domain name -> mixing weight for this stage (one entry = a single-domain stage).")
    name: str = opt("", "Stage label in metrics (default: the domain names joined by '+').")


@dataclass(frozen=True)
class StrategyConfig:
    name: str = opt("mgs", "Training strategy (mgs.rl.trainer.STRATEGIES): mixed, sequential, mgs.")
    stages: tuple[StageConfig, ...] = opt((), "Stages of `sequential` (ignored by the others).")
    reset_reference_per_stage: bool = opt(False, "sequential: the KL reference becomes the policy at each stage start.")


@dataclass(frozen=True)
class GRPOConfig:
    group_size: int = opt(4, "G: sampled completions per prompt.")
    prompts_per_step: int = opt(12, "Prompts per optimizer step, all domains together.")
    clip_eps: float = opt(0.2, "PPO ratio clip epsilon.")
    dual_clip: float = opt(3.0, "Dual clip bound for negative advantages (0 = off).")
    kl_coef: float = opt(0.001, "Coefficient of the k3 KL to the reference policy (0 = no reference model kept).")
    entropy_coef: float = opt(0.0, "Entropy bonus coefficient (paper: 0.001).")
    adv_eps: float = opt(1e-6, "Epsilon added to the group std when normalising advantages.")


@dataclass(frozen=True)
class RolloutConfig:
    backend: str = opt("auto", "Rollout backend (mgs.rl.rollout.ROLLOUT_BACKENDS): graph (our decode loop, CUDA-graphed; "
                       "the fastest on CUDA), hf (transformers generate); auto = graph on CUDA (hf under FSDP2), hf on CPU.")
    max_new_tokens: int = opt(64, "Maximum sampled tokens per completion.")
    temperature: float = opt(1.0, "Sampling temperature (paper: 0.7).")
    top_p: float = opt(1.0, "Nucleus sampling top-p.")
    compile: str = opt("auto", "Compile the decode step (torch.compile + CUDA graphs): ~45 s per new batch shape, then "
                       "the fastest steps. auto = on CUDA; off suits short runs and many processes sharing one GPU.",
                       ("auto", "on", "off"))
    template: str = opt("none", "Thinking template (mgs.domains.template): none, think_response (the paper's "
                        "<think>...</think><response>...</response>), think; rewards see the response only.")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = opt(1e-6, "AdamW learning rate (constant).")
    weight_decay: float = opt(0.01, "AdamW weight decay.")
    betas: tuple[float, ...] = opt((0.9, 0.999), "AdamW betas.")
    eps: float = opt(1e-8, "AdamW epsilon.")
    grad_clip: float = opt(1.0, "Global grad-norm clip applied after surgery (0 = off).")


@dataclass(frozen=True)
class SurgeryConfig:
    granularity: str = opt("module", "How parameters are grouped for surgery (mgs.surgery partitions); global = global PCGrad.")
    method: str = opt("pcgrad", "How domain gradients are combined in each group (mgs.surgery methods); sum = Mixed RL.")
    monitor: bool = opt(False, "mixed/sequential: compute per-domain gradients and surgery stats without changing the update.")
    buffer_dtype: str = opt("param", "dtype of the per-domain gradient buffers: param = each parameter's own dtype (the "
                            "least memory: domain backwards accumulate in place, D gradients in all vs Mixed RL's 1); "
                            "float32 keeps bf16 models' domain gradients exact (D fp32 buffers + .grad).",
                            ("param",) + tuple(DTYPES))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = opt(10, "Optimizer steps (mixed/mgs; sequential uses its stages' steps).")
    seed: int = opt(0, "Seed of data order, sampling and surgery order.")
    out_dir: str = opt("runs/default", "Run directory.")
    micro_batch_size: int = opt(0, "Micro-batch size for forward/backward, in `micro_batch_unit`s; 0 = auto "
                                "(16 samples on CPU; on CUDA a token budget sized from memory: 32768 on the first "
                                "step, then what fits 60% of the memory at the measured activation bytes per token).")
    micro_batch_unit: str = opt("auto", "Unit of micro_batch_size: auto = samples on CPU, tokens on CUDA (sequences "
                                "bucketed by length, so a token budget wastes little padding).",
                                ("auto", "samples", "tokens"))
    compile: str = opt("auto", "torch.compile the training forward (one dynamic-shape compile of the decoder block, "
                       "shared by all layers, + the LM-head chunks): fuses the elementwise chains that dominate an eager "
                       "step; the first micro-batch compiles (~60 s on an H100). auto = on for a single-process CUDA "
                       "run, off on CPU, under DDP/FSDP2 and with gradient checkpointing.", ("auto", "on", "off"))
    pack: str = opt("auto", "Packed (padding-free) micro-batches: each forward runs its samples' tokens as one "
                    "concatenated row, attention kept within each sample (a variable-length flash kernel on CUDA "
                    "in fp16/bf16, exact per-sample SDPA elsewhere), so a step costs its tokens, not rows x longest; "
                    "a token micro_batch_size then counts real tokens. auto = on for a single-process CUDA run in "
                    "fp16/bf16 with torch's varlen attention and the mgs_sdpa attention, off otherwise (so CPU, "
                    "float32 and DDP/FSDP2 runs pad); on = also on CPU / float32 (exact, slower); not under "
                    "DDP/FSDP2. Checked on a GPU: the kernel path matches padding against the fp32 reference "
                    "(benchmarks/check_cuda.py), and a whole RL step on an H200 took 2.60 s packed against 3.62 s "
                    "padded, its forward+backward 0.55 s against 1.35 s (docs/performance.md, session 8).",
                    ("auto", "on", "off"))
    save_every: int = opt(0, "Checkpoint every N steps (0 = only at the end / on interrupt).")
    save_final: bool = opt(True, "Checkpoint model + optimizer at the end (false: skip it, e.g. demos/CI, where it "
                           "costs ~1.6 GB per strategy; interrupts still checkpoint).")
    parallel: str = opt("none", "Multi-process training (mgs.dist.PARALLEL): none, ddp (full replicas), fsdp2 (sharded; "
                        "use it for 7-8B models). ddp/fsdp2 need a torchrun launch: docs/distributed.md.")
    compare: tuple[str, ...] = opt(
        (), "Run these strategies one after the other from the same initial weights (sub-runs RUN/<strategy>) "
        "and print them side by side."
    )


@dataclass(frozen=True)
class EvalConfig:
    before: bool = opt(True, "Greedy held-out evaluation before training.")
    after: bool = opt(True, "Greedy held-out evaluation after training.")
    each_stage: bool = opt(True, "sequential: the same held-out evaluation after each stage's last step "
                           "(RUN/eval/stage_<k>_<name>.json; forgetting/rigidity in `mgs report`).")
    max_new_tokens: int | None = opt(None, "Eval generation length (None = rollout.max_new_tokens).")
    benchmarks: tuple[str, ...] = opt((), "Benchmarks evaluated in this process once training has finished "
                                      "(names as in `mgs eval --benchmarks`: gsm8k, math500, ifeval, ifbench, "
                                      "alpaca_eval, mt_bench, arena_hard), greedy, with the trained weights and the "
                                      "rollout's decode step (no reload, no new compile) -> RUN/eval/bench.json + "
                                      "bench.scores.json, as `mgs eval RUN --tag bench` would write. Needs "
                                      "eval.data_dir. [] = none.")
    data_dir: str | None = opt(None, "Folder laid out like shared/data with the files of eval.benchmarks.")
    benchmark_limit: int | None = opt(None, "eval.benchmarks: the first N prompts of each (None = all).")
    benchmark_max_new_tokens: int = opt(512, "eval.benchmarks: generation length (mgs eval's --max-new-tokens).")


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = opt(False, "Also log metrics to TensorBoard (RUN/tensorboard).")
    wandb: str | None = opt(None, "Weights & Biases project name (None = off).")
    progress: bool = opt(True, "tqdm progress bar with live numbers.")
    save_completions: bool = opt(True, "Write sampled completions to RUN/completions/.")


@dataclass(frozen=True)
class DiagnosticsConfig:
    save_domain_grads_steps: tuple[int, ...] = opt((), "Steps whose per-domain gradients are saved to RUN/grads/.")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = opt(ModelConfig(), "The policy.")
    domains: tuple[DomainSpec, ...] = opt((), "Training domains (at least one).")
    strategy: StrategyConfig = opt(StrategyConfig(), "How domains are combined over time and in each update.")
    grpo: GRPOConfig = opt(GRPOConfig(), "GRPO objective.")
    rollout: RolloutConfig = opt(RolloutConfig(), "Sampling of completions.")
    optim: OptimConfig = opt(OptimConfig(), "Optimizer.")
    surgery: SurgeryConfig = opt(SurgeryConfig(), "Gradient surgery (strategy mgs, or monitor mode).")
    train: TrainConfig = opt(TrainConfig(), "Loop, batching, run directory.")
    eval: EvalConfig = opt(EvalConfig(), "Held-out evaluation.")
    logging: LoggingConfig = opt(LoggingConfig(), "Metrics sinks.")
    diagnostics: DiagnosticsConfig = opt(DiagnosticsConfig(), "Extra diagnostics files.")


# ---------------------------------------------------------------------------------------------------------------
# dict <-> dataclass


def _choices_error(key: str, value: Any, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{key}: {value!r} is not allowed; choose from {allowed}{hint}")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is tuple:
        if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}.{i}") for i, v in enumerate(value))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads on/off (and yes/no) as booleans
            value = "on" if value else "off"
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint} (keys here: {sorted(fields)})")
        value = _coerce(hints[key], value, full)
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise _choices_error(full, value, list(choices))
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(data: dict) -> Config:
    """Build and validate a Config from plain data (missing keys take their defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# overrides


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. grpo.group_size=8)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`a.b.c=value` (value parsed as YAML: numbers, true/false, null, [lists], {maps}); list items by index
    (`domains.0.weight=2`). Unknown keys are caught by validation."""
    for item in overrides:
        path, value = _parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {item!r}: {where!r} must be an index below {len(node)}")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, (dict, list)):
                    raise ConfigError(f"override {item!r}: {where!r} is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {item!r}: index {last!r} must be below {len(node)}")
            node[int(last)] = value
        else:
            node[last] = value
    return data


DEFAULT_CONFIG = "default.yaml"


def read_yaml(path: str | Path | None) -> dict:
    """The file's data; `None` reads the embedded default (mgs/configs/default.yaml)."""
    if path is None:
        text = resources.files("mgs").joinpath("configs", DEFAULT_CONFIG).read_text()
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found (give a YAML file, or no file for the default run)")
        text = p.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or DEFAULT_CONFIG}: top level must be a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """YAML file (or the embedded default) + dotted overrides -> validated frozen Config."""
    return from_dict(apply_overrides(read_yaml(path), list(overrides)))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------------------------------------------
# validation against the registries


def _registry_names(what: str) -> list[str] | None:
    """Allowed names from the registries; None when the providing package is not importable (yet)."""
    try:
        if what == "strategy":
            from mgs.rl.trainer import STRATEGIES

            return STRATEGIES.names()
        if what == "domain":
            from mgs.domains import DOMAINS, load_builtin_domains

            load_builtin_domains()
            return DOMAINS.names()
        if what == "parallel":
            from mgs.dist.parallel import PARALLEL

            return PARALLEL.names()
        if what == "backend":
            from mgs.rl.rollout import ROLLOUT_BACKENDS

            return ROLLOUT_BACKENDS.names()
        if what == "template":
            from mgs.domains.template import TEMPLATES

            return TEMPLATES.names()
        if what in ("method", "granularity"):
            import mgs.surgery as surgery

            reg = _surgery_registry(surgery, what)
            return reg.names() if reg is not None else None
    except ImportError:
        return None
    raise AssertionError(what)


def _surgery_registry(surgery: Any, what: str) -> Any:
    candidates = {
        "method": ("METHODS", "WEIGHTINGS"),
        "granularity": ("GRANULARITIES", "PARTITIONS"),
    }[what]
    for name in candidates:
        if hasattr(surgery, name):
            return getattr(surgery, name)
    return None


def _check_name(key: str, value: str, what: str) -> None:
    names = _registry_names(what)
    if names is not None and value not in names:
        raise _choices_error(key, value, names)


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate(cfg: Config) -> None:
    """Cross-field and registry checks; raises ConfigError naming the key."""
    if not cfg.domains:
        raise ConfigError("domains: give at least one domain (a list of {name, kind, weight, params})")
    names = [d.name or d.kind for d in cfg.domains]
    if len(set(names)) != len(names):
        raise ConfigError(f"domains: names must be unique, got {names}")
    for i, d in enumerate(cfg.domains):
        if not d.kind:
            raise ConfigError(f"domains.{i}.kind: required (a registered domain kind)")
        _check_name(f"domains.{i}.kind", d.kind, "domain")
        _positive(f"domains.{i}.weight", d.weight, allow_zero=True)
    _check_name("strategy.name", cfg.strategy.name, "strategy")
    for s in cfg.train.compare:
        _check_name("train.compare", s, "strategy")
    _check_name("rollout.backend", cfg.rollout.backend, "backend")
    _check_name("train.parallel", cfg.train.parallel, "parallel")
    if cfg.train.parallel != "none" and cfg.train.compare:
        raise ConfigError(f"train.compare runs strategies one after the other in one process; with "
                          f"train.parallel={cfg.train.parallel} launch each strategy as its own torchrun run "
                          "(strategy.name=... train.out_dir=...)")
    _check_name("rollout.template", cfg.rollout.template, "template")
    _check_name("surgery.method", cfg.surgery.method, "method")
    _check_name("surgery.granularity", cfg.surgery.granularity, "granularity")
    uses_sequential = cfg.strategy.name == "sequential" or "sequential" in cfg.train.compare
    if uses_sequential and not cfg.strategy.stages:
        raise ConfigError("strategy.stages: sequential needs at least one stage ({steps, domains: {name: weight}})")
    for i, st in enumerate(cfg.strategy.stages):
        _positive(f"strategy.stages.{i}.steps", st.steps)
        if not st.domains:
            raise ConfigError(f"strategy.stages.{i}.domains: give at least one domain name")
        for dn, w in st.domains.items():
            if dn not in names:
                raise _choices_error(f"strategy.stages.{i}.domains", dn, names)
            if not isinstance(w, (int, float)) or w < 0:
                raise ConfigError(f"strategy.stages.{i}.domains.{dn}: weight must be a number >= 0, got {w!r}")
    if sum(d.weight for d in cfg.domains) <= 0:
        raise ConfigError("domains: at least one weight must be > 0")
    if cfg.grpo.group_size < 2:
        raise ConfigError(f"grpo.group_size: must be >= 2 (advantages need a group), got {cfg.grpo.group_size}")
    _positive("grpo.prompts_per_step", cfg.grpo.prompts_per_step)
    _positive("grpo.clip_eps", cfg.grpo.clip_eps)
    if cfg.grpo.dual_clip and cfg.grpo.dual_clip <= 1:
        raise ConfigError(f"grpo.dual_clip: must be > 1 (or 0 = off), got {cfg.grpo.dual_clip}")
    _positive("grpo.kl_coef", cfg.grpo.kl_coef, allow_zero=True)
    _positive("rollout.max_new_tokens", cfg.rollout.max_new_tokens)
    _positive("rollout.temperature", cfg.rollout.temperature)
    if not 0 < cfg.rollout.top_p <= 1:
        raise ConfigError(f"rollout.top_p: must be in (0, 1], got {cfg.rollout.top_p}")
    _positive("optim.lr", cfg.optim.lr, allow_zero=True)
    _positive("optim.grad_clip", cfg.optim.grad_clip, allow_zero=True)
    _positive("train.steps", cfg.train.steps)
    _positive("train.micro_batch_size", cfg.train.micro_batch_size, allow_zero=True)
    _positive("model.lora.r", cfg.model.lora.r, allow_zero=True)
    _validate_benchmarks(cfg.eval)


def _validate_benchmarks(e: EvalConfig) -> None:
    """eval.benchmarks: known names, each file present under eval.data_dir (checked now, not after training)."""
    if not e.benchmarks:
        return
    _positive("eval.benchmark_max_new_tokens", e.benchmark_max_new_tokens)
    if e.benchmark_limit is not None:
        _positive("eval.benchmark_limit", e.benchmark_limit)
    try:
        from mgs.eval.benchmarks import BENCHMARKS
    except ImportError:
        return
    if len(set(e.benchmarks)) != len(e.benchmarks):
        raise ConfigError(f"eval.benchmarks: a benchmark is listed twice in {list(e.benchmarks)}")
    for name in e.benchmarks:
        if name not in BENCHMARKS:
            raise _choices_error("eval.benchmarks", name, BENCHMARKS.names())
    if not e.data_dir:
        raise ConfigError("eval.data_dir: eval.benchmarks needs the folder with the benchmark files (laid out like "
                          "shared/data: gsm8k/test.jsonl, ifeval/input_data.jsonl, ...); set eval.data_dir=PATH")
    missing = [f"{n}: {Path(e.data_dir) / BENCHMARKS.get(n).file}" for n in e.benchmarks
               if not (Path(e.data_dir) / BENCHMARKS.get(n).file).is_file()]
    if missing:
        raise ConfigError(f"eval.data_dir={e.data_dir}: missing benchmark files {missing}; point eval.data_dir at a "
                          "folder laid out like shared/data, or drop those names from eval.benchmarks")


# ---------------------------------------------------------------------------------------------------------------
# reference


def config_reference(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per key: `section.key (default): help [choices]` -- for --help-config and the docs."""
    lines = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{key}: {f.metadata.get('help', '')}")
            lines.extend(config_reference(tp, key + "."))
            continue
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None
        choices = f.metadata.get("choices")
        extra = f" [{', '.join(choices)}]" if choices else ""
        lines.append(f"{key} (default {to_dict(default)!r}): {f.metadata.get('help', '')}{extra}")
        if item is not None and dataclasses.is_dataclass(item):
            lines.extend(config_reference(item, key + ".N."))
    return lines
