"""The multi-domain GRPO training loop: `train(cfg, run_dir)` is the whole loop in one readable function.

Per step: draw prompts from the stage's domains by their mixing weights -> sample G completions per prompt
(rollout backend) -> score each with its own domain's reward (`Run.rollout`) -> `Run.learn(scored)`: group
advantages, reference log-probs (only when kl_coef != 0), the per-domain step of `mgs.rl.step` (surgery or sum),
metrics. Fixed rollouts can be injected into `Run.learn`, which is how equivalences are tested.

Strategies are a registry (`STRATEGIES`): each turns the config into a `Plan` (stages, and whether the update
keeps per-domain gradients and applies surgery). `mixed` = Mixed RL (optionally monitor-only surgery stats),
`sequential` = stages of single domains or mixes (with `eval.each_stage`, a held-out eval after each stage:
RUN/eval/stage_<k>_<name>.json, for forgetting/rigidity), `mgs` = Mixed batches + gradient surgery (any granularity and
method; `granularity=global` is global PCGrad, `method=sum` is exactly Mixed RL).

`run(cfg)` adds what the CLI needs around `train`: `train.compare` runs several strategies one after the other from
the same initial weights into RUN/<strategy>/ and writes a side-by-side summary.

Several processes (`torchrun ... -m mgs train CONFIG train.parallel=ddp|fsdp2`, docs/distributed.md): every rank
draws the same global prompt list and keeps its round-robin share (a prompt's G samples stay on one rank), samples
and scores them, and `mgs.dist.distributed_update` makes the update equal to the one-process update of the global
batch. Metrics are aggregated over ranks; rank 0 alone writes the run directory; checkpoints are DCP (any world size).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from mgs.config import Config, save_config, to_dict
from mgs.dist import PARALLEL, DistContext, distributed_update, init_from_env
from mgs.dist import checkpoint as dist_checkpoint
from mgs.dist.checks import check_batch, check_proportions, check_same_partition
from mgs.dist.data import check_groups_local, rank_share
from mgs.dist.metrics import gather_metrics
from mgs.domains import build_domain
from mgs.domains.base import Domain, Sample
from mgs.registry import Registry
from mgs.rl import checkpoint
from mgs.rl.grpo import group_advantages
from mgs.rl.logging import RunLogger, read_metrics
from mgs.rl.logprobs import compiled_graphs, forward_tokens
from mgs.rl.step import StepOutcome, StepSettings, TrainSample, plan_schedule, reference_logprobs, update

# ----------------------------------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    weights: dict[str, float]  # domain name -> mixing weight (> 0 only)


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    per_domain: bool  # keep one gradient per domain (surgery, or monitor-only stats)
    surgery: bool  # combine with surgery.method (False: plain sum)
    eval_each_stage: bool = False  # held-out eval after each stage's last step (forgetting / rigidity)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> int:
        """Index of the stage that runs (1-based) `step`."""
        end = 0
        for i, s in enumerate(self.stages):
            end += s.steps
            if step <= end:
                return i
        raise ValueError(f"step {step} is past the plan's {self.total_steps} steps")


STRATEGIES: Registry[Callable[[Config], Plan]] = Registry("strategy")


def _all_domains(cfg: Config, name: str) -> Stage:
    weights = {d.name or d.kind: d.weight for d in cfg.domains if d.weight > 0}
    return Stage(name, cfg.train.steps, weights)


@STRATEGIES.register("mixed")
def mixed_plan(cfg: Config) -> Plan:
    """Mixed RL: every batch mixes the domains by weight; the update is the sum (surgery.monitor: stats only)."""
    return Plan((_all_domains(cfg, "mixed"),), per_domain=cfg.surgery.monitor, surgery=False)


@STRATEGIES.register("mgs")
def mgs_plan(cfg: Config) -> Plan:
    """Mixed batches, per-domain gradients combined by surgery (granularity + method from `surgery`)."""
    return Plan((_all_domains(cfg, "mgs"),), per_domain=True, surgery=True)


@STRATEGIES.register("sequential")
def sequential_plan(cfg: Config) -> Plan:
    """Stages one after the other (each a domain or a mix); the policy carries over; update = sum."""
    stages = tuple(
        Stage(st.name or "+".join(st.domains), st.steps, {k: float(v) for k, v in st.domains.items() if v > 0})
        for st in cfg.strategy.stages
    )
    return Plan(stages, per_domain=cfg.surgery.monitor, surgery=False, eval_each_stage=cfg.eval.each_stage)


AUTO_MICRO_BATCH = {False: (16, "samples"), True: (32768, "tokens")}  # by "on CUDA": CPU memory is small per core


class TokenBudget:
    """The micro-batch token budget of an auto-sized CUDA run, sized from memory: after each update the activation
    bytes per forward token (padded, or real when packed) are read off the peak memory (peak - what was allocated
    before, over the largest micro-batch), and the next budget is what fits `fraction` of the memory this process can get, rounded down to
    4096 tokens, at most 2x the last one (grows step by step), within [floor, cap]. Fewer, larger micro-batches
    cost fewer launches per token, and MGS (one micro-batch series per domain) needs no more of them than Mixed RL.
    The first step uses `start` (AUTO_MICRO_BATCH's 32768), which fits a 135M-1B model on a 24 GB card."""

    def __init__(self, start: int = 32768, fraction: float = 0.6, floor: int = 4096, cap: int = 262144) -> None:
        self.value, self.fraction, self.floor, self.cap = start, fraction, floor, cap

    def observe(self, base_bytes: int, peak_bytes: int, largest_tokens: int, available_bytes: int) -> int:
        """available_bytes: free device memory + what this process holds (allocated or cached)."""
        if largest_tokens <= 0 or peak_bytes <= base_bytes:
            return self.value
        per_token = (peak_bytes - base_bytes) / largest_tokens
        room = self.fraction * available_bytes - base_bytes
        fit = int(room / per_token) // 4096 * 4096
        self.value = max(self.floor, min(self.cap, 2 * self.value, fit))
        return self.value


def micro_batching(train_cfg, on_cuda: bool) -> tuple[int, str]:
    """(size, unit) of the step's micro-batches: `train.micro_batch_size`/`micro_batch_unit`, `0`/`auto` filled per
    device (tokens on CUDA: one long-sequence micro-batch costs what a short one does, so count tokens, not samples)."""
    auto_size, auto_unit = AUTO_MICRO_BATCH[on_cuda]
    unit = auto_unit if train_cfg.micro_batch_unit == "auto" else train_cfg.micro_batch_unit
    if train_cfg.micro_batch_size:
        return train_cfg.micro_batch_size, unit
    return (auto_size if unit == auto_unit else AUTO_MICRO_BATCH[unit == "tokens"][0]), unit


def resolve_compile(setting: str, on_cuda: bool, distributed: bool, checkpointing: bool = False) -> bool:
    """train.compile -> whether the training forward's layers are compiled: "auto" = single-process CUDA runs only
    (CPU compile costs more than it saves on a short run; DDP/FSDP2 models take the wrapped `via_forward` path);
    never with gradient checkpointing (its recomputation runs the plain layers)."""
    if checkpointing:
        return False
    return {"on": True, "off": False, "auto": on_cuda and not distributed}[setting]


def resolve_pack(setting: str, model: torch.nn.Module, distributed: bool) -> bool:
    """train.pack -> whether micro-batches are packed (padding-free). "auto" = where the variable-length flash
    kernel applies (single-process CUDA, fp16/bf16, torch's varlen attention, the model on the "mgs_sdpa"
    attention); "on" = also elsewhere (the exact per-sample SDPA path, e.g. CPU). DDP/FSDP2 models run the wrapped
    forward, which pads: never packed there."""
    from mgs.rl.attention import IMPLEMENTATION, varlen_kernel_applies

    if setting not in ("auto", "on", "off"):
        raise ValueError(f"train.pack must be auto, on or off, got {setting!r}")
    if setting == "off":
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    impl = getattr(getattr(base, "config", None), "_attn_implementation", None)
    if setting == "on":
        if distributed:
            raise ValueError("train.pack=on is not supported under DDP/FSDP2 (their wrapped forward pads); set "
                             "train.pack=auto or off")
        if impl != IMPLEMENTATION:
            raise ValueError(f"train.pack=on needs the {IMPLEMENTATION!r} attention, this model uses {impl!r}; set "
                             "train.pack=auto or off")
        return True
    param = next(base.parameters())
    return not distributed and impl == IMPLEMENTATION and varlen_kernel_applies(param.device, param.dtype)


def allocate(weights: dict[str, float], total: int) -> dict[str, int]:
    """Split `total` prompts over domains in proportion to `weights` (largest remainder, ties by order)."""
    wsum = sum(weights.values())
    exact = {d: total * w / wsum for d, w in weights.items()}
    counts = {d: int(math.floor(x)) for d, x in exact.items()}
    rest = sorted(weights, key=lambda d: (-(exact[d] - counts[d]), list(weights).index(d)))
    for d in rest[: total - sum(counts.values())]:
        counts[d] += 1
    return counts


class DomainStream:
    """A domain's training prompts in a seeded order, reshuffled every epoch; (epoch, cursor) is the data position."""

    def __init__(self, samples: list[Sample], name: str, seed: int) -> None:
        if not samples:
            raise ValueError(f"domain {name!r} has no training prompts (check its params and train_limit)")
        self.samples, self.name, self.seed = samples, name, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(range(len(self.samples)))
        random.Random(f"{self.seed}/{self.name}/{self.epoch}").shuffle(order)
        return order

    def take(self, n: int) -> list[Sample]:
        out = []
        for _ in range(n):
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self.samples[self._order[self.cursor]])
            self.cursor += 1
        return out

    def state(self) -> list[int]:
        return [self.epoch, self.cursor]

    def restore(self, state: Sequence[int]) -> None:
        self.epoch, self.cursor = int(state[0]), int(state[1])
        self._order = self._shuffle()


# ------------------------------------------------------------------------------------------------------ the run


@dataclass
class Scored:
    """One sampled completion with its reward; `group` numbers the prompt (G consecutive entries share it)."""

    domain: str
    group: int
    prompt_ids: list[int]
    completion_ids: list[int]
    reward: float | None
    uid: str = ""
    prompt: str = ""
    response: str = ""
    reward_info: dict | None = None


def load_policy_for(cfg: Config, device: str | torch.device | None = None):
    """The policy of `cfg.model` (`tiny:<family>` builds a tiny random model for tests) on `device` (default
    cfg.model.device)."""
    from mgs.rl.model import build_tiny_policy, load_policy

    m = cfg.model
    if device is None:
        device = m.device if m.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    lora = None if m.lora.r == 0 else {"r": m.lora.r, "alpha": m.lora.alpha, "dropout": m.lora.dropout,
                                       "target_modules": m.lora.target_modules}
    if m.name.startswith("tiny:"):
        return build_tiny_policy(m.name.split(":", 1)[1], seed=cfg.train.seed, dtype=m.dtype, device=device, lora=lora)
    return load_policy(m.name, dtype=m.dtype, device=device, lora=lora, gradient_checkpointing=m.gradient_checkpointing)


class Reference:
    """The KL reference policy: a frozen copy (full fine-tuning) or the base model with adapters off (LoRA)."""

    def __init__(self, policy, temperature: float) -> None:
        self.policy, self.temperature = policy, temperature
        self.max_tokens: int | None = None  # padded tokens per reference pass (the step's budget; None: 16 samples)
        self.packed = False  # padding-free passes (the step's StepSettings.pack; max_tokens then counts real tokens)
        self.model = None if policy.is_peft else copy.deepcopy(policy.model).requires_grad_(False).eval()

    def reset_to_policy(self) -> None:
        if self.model is None:
            raise ValueError("strategy.reset_reference_per_stage is not supported with LoRA (the reference is the base "
                             "model); set it to false or use full fine-tuning")
        self.model.load_state_dict(self.policy.model.state_dict())

    def state(self) -> dict[str, torch.Tensor] | None:
        return None if self.model is None else {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def logprobs(self, samples: list[TrainSample]) -> list[torch.Tensor]:
        pad = self.policy.tokenizer.pad_token_id
        if self.model is not None:
            return reference_logprobs(self.model, samples, pad, temperature=self.temperature,
                                      max_tokens=self.max_tokens, packed=self.packed)
        with self.policy.model.disable_adapter():
            return reference_logprobs(self.policy.model, samples, pad, temperature=self.temperature,
                                      max_tokens=self.max_tokens, packed=self.packed)


class Run:
    """The state of one training run (policy, optimizer, domains, data streams) and its two per-step actions:
    `rollout` (sample + score) and `learn` (advantages + update). Components get their own config sections."""

    def __init__(self, cfg: Config, policy=None, domains: dict[str, Domain] | None = None,
                 ctx: DistContext | None = None) -> None:
        from mgs.rl.rollout import ROLLOUT_BACKENDS

        self.cfg = cfg
        self.ctx = ctx or DistContext.single()
        self.parallel = PARALLEL.get(cfg.train.parallel if self.ctx.distributed else "none")
        self.plan = STRATEGIES.get(cfg.strategy.name)(cfg)
        self.policy = policy if policy is not None else load_policy_for(cfg)
        self.policy.model.eval()  # no dropout: the sampled and the trained distributions are the same
        self.domains = domains if domains is not None else {
            (d.name or d.kind): build_domain(d.kind, d.name or d.kind, **d.params) for d in cfg.domains}
        self.order = [d.name or d.kind for d in cfg.domains]  # the fixed domain order of every step
        if self.policy.device.type == "cuda":  # optional Domain.warm(): start reward workers before step 1 is timed
            for domain in self.domains.values():
                getattr(domain, "warm", lambda: None)()
        self.streams: dict[str, DomainStream] = {}
        self._reserved = False  # rollout backend told the longest training prompt (reserve_decode_cache)
        self._eval_samples: dict[str, list[Sample]] = {}
        self._benchmarks: list | None = None
        self.reference = Reference(self.policy, cfg.rollout.temperature) if cfg.grpo.kl_coef else None
        # the trained module: DDP wrapper / FSDP2-sharded model (policy.model stays the plain module, which for FSDP2
        # is the same object); wrapped BEFORE AdamW because FSDP2 replaces the parameters by DTensor shards
        self.model = self.parallel.wrap(self.policy.model, self.ctx)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        on_cuda = bool(trainable) and trainable[0].device.type == "cuda"
        self.optimizer = torch.optim.AdamW(  # fused: one kernel for all parameters (plain tensors on CUDA only)
            trainable, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay, **({"fused": True} if on_cuda and not self.parallel.sharded else {}))
        self.micro_batch_size, self.micro_batch_unit = micro_batching(cfg.train, on_cuda)
        auto_tokens = on_cuda and not cfg.train.micro_batch_size and self.micro_batch_unit == "tokens"
        self.token_budget = TokenBudget(self.micro_batch_size) if auto_tokens and not self.ctx.distributed else None
        # sharded models generate eagerly with transformers' generate unless asked otherwise: a compiled decode step
        # would trace FSDP2's hooks, and our graph decode loop is not tested under FSDP2
        backend_name = "hf" if self.parallel.sharded and cfg.rollout.backend == "auto" else cfg.rollout.backend
        backend_cls = ROLLOUT_BACKENDS.get(backend_name)
        eager = self.parallel.sharded and "compile" in inspect.signature(backend_cls).parameters
        compile_decode = {"auto": None, "on": True, "off": False}[cfg.rollout.compile]
        if eager:
            compile_decode = False
        self.backend = backend_cls(self.policy.model, self.policy.tokenizer,
                                   **({} if compile_decode is None else {"compile": compile_decode}))
        g, o, s = cfg.grpo, cfg.optim, cfg.surgery
        self.settings = StepSettings(
            clip_eps=g.clip_eps, dual_clip=g.dual_clip, kl_coef=g.kl_coef, entropy_coef=g.entropy_coef,
            grad_clip=o.grad_clip, per_domain=self.plan.per_domain, surgery=self.plan.surgery,
            granularity=s.granularity, method=s.method, seed=cfg.train.seed, temperature=cfg.rollout.temperature,
            buffer_dtype={"param": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                          "float16": torch.float16}[s.buffer_dtype],
            compile=resolve_compile(cfg.train.compile, on_cuda, self.ctx.distributed, cfg.model.gradient_checkpointing),
            pack=resolve_pack(cfg.train.pack, self.policy.model, self.ctx.distributed))
        if self.reference is not None:
            self.reference.packed = self.settings.pack
        if self.ctx.distributed:
            self._startup_checks()

    def _startup_checks(self) -> None:
        """Multi-process rules (mgs.dist.checks), each failing on every rank with an error saying what to change."""
        from mgs.surgery import partition

        cfg, P = self.cfg, self.cfg.grpo.prompts_per_step
        check_batch(P, self.ctx.world_size)
        for stage in self.plan.stages:
            check_proportions(allocate(stage.weights, P), stage.weights, P)
        if self.plan.per_domain:
            names = [n for n, p in self.model.named_parameters() if p.requires_grad]
            check_same_partition(partition(names, cfg.surgery.granularity, family=self.settings.family), self.ctx)
        if self.parallel.sharded and cfg.strategy.reset_reference_per_stage and self.reference is not None:
            raise ValueError(f"strategy.reset_reference_per_stage with train.parallel={cfg.train.parallel} is not "
                             "supported yet (the reference copy would need the gathered policy); use train.parallel=ddp")
        if self.parallel.sharded and cfg.diagnostics.save_domain_grads_steps:
            raise ValueError(f"diagnostics.save_domain_grads_steps with train.parallel={cfg.train.parallel}: the kept "
                             "gradients are shards; set it to [] or use train.parallel=ddp")

    def full_params(self):
        """Context in which forwards of the policy are rank-local (rollouts, eval, reference log-probs)."""
        return self.parallel.full_params(self.model)

    def stream(self, domain: str) -> DomainStream:
        if domain not in self.streams:
            spec = next(d for d in self.cfg.domains if (d.name or d.kind) == domain)
            samples = self.domains[domain].load("train", limit=spec.train_limit, seed=self.cfg.train.seed)
            self.streams[domain] = DomainStream(samples, domain, self.cfg.train.seed)
        return self.streams[domain]

    def ensure_reserved(self) -> None:
        """reserve_decode_cache once, before the first generation of the run (rollout or eval)."""
        if not self._reserved:
            self._reserved = True
            self.reserve_decode_cache()
            reserve_rows = getattr(self.backend, "reserve_rows", None)
            if reserve_rows is not None:
                reserve_rows(self.eval_batch_size())

    def reserve_decode_cache(self) -> int:
        """Tell the rollout backend the longest training prompt (tokens, over the 32 longest-by-characters prompts
        of each domain the plan trains on), so its static KV cache is sized once instead of growing (and
        recompiling the decode graph) mid-run. Returns that length."""
        from mgs.rl.model import longest_prompt_tokens

        cfg, tok = self.cfg, self.policy.tokenizer
        domains = [d for d in self.order if any(d in st.weights for st in self.plan.stages)]
        longest = max((longest_prompt_tokens(tok, self.stream(d).samples, cfg.rollout.template) for d in domains),
                      default=0)
        reserve = getattr(self.backend, "reserve", None)
        if reserve is None:
            return longest
        if longest:
            reserve(longest, cfg.rollout.max_new_tokens)
        # the evals after training decode in the same cache (with reuse_rows, in the same compiled graph)
        if cfg.eval.before or cfg.eval.after or (self.plan.eval_each_stage and len(self.plan.stages) > 1):
            held_out = max((longest_prompt_tokens(tok, self.eval_samples(spec), cfg.rollout.template)
                            for spec in cfg.domains if spec.eval_limit != 0), default=0)
            if held_out:
                reserve(held_out, cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens)
        if cfg.eval.benchmarks and self.ctx.is_main:
            from mgs.eval.suite import reserve_for

            reserve_for(self.backend, tok, self.benchmarks(), self.suite_settings())
        return longest

    def eval_samples(self, spec) -> list[Sample]:
        """The held-out samples of one domain spec (its test split, `eval_limit` of them), loaded once."""
        name = spec.name or spec.kind
        if name not in self._eval_samples:
            self._eval_samples[name] = self.domains[name].load("test", limit=spec.eval_limit, seed=self.cfg.train.seed)
        return self._eval_samples[name]

    def benchmarks(self) -> list:
        """`eval.benchmarks` loaded (domains + prompts, `mgs.eval.suite.load_benchmarks`), once."""
        if self._benchmarks is None:
            from mgs.eval.benchmarks import BENCHMARKS
            from mgs.eval.suite import load_benchmarks

            self._benchmarks = load_benchmarks([BENCHMARKS.get(n) for n in self.cfg.eval.benchmarks],
                                               self.suite_settings())
        return self._benchmarks

    def suite_settings(self):
        """The benchmark eval's settings: greedy, the config's limit and length, the training template, prompts per
        chunk = this rank's rollout rows (so the eval decodes at the rollout's batch shape)."""
        from mgs.eval.suite import SuiteSettings

        e = self.cfg.eval
        return SuiteSettings(data_dir=e.data_dir, limit=e.benchmark_limit, max_new_tokens=e.benchmark_max_new_tokens,
                             template=self.cfg.rollout.template, batch_size=self.eval_batch_size())

    def eval_batch_size(self) -> int:
        """Prompts per eval generate call: as many as one rollout has rows on this rank (prompts x G), so a greedy
        eval (one row per prompt) fills the rollout's compiled decode batch instead of compiling a new shape."""
        per_rank = -(-self.cfg.grpo.prompts_per_step // self.ctx.world_size)
        return per_rank * self.cfg.grpo.group_size

    def rollout(self, step: int, stage: Stage) -> tuple[list[Scored], dict[str, float]]:
        """Draw the step's prompts, sample G completions each, score them. Returns scored rows (grouped by prompt)."""
        from mgs.domains.template import apply_template, score_responses
        from mgs.rl.model import encode_prompts

        cfg = self.cfg
        self.ensure_reserved()
        counts = allocate(stage.weights, cfg.grpo.prompts_per_step)
        # every rank draws the same global list (same seeded streams) and keeps its round-robin share
        drawn = [(d, s) for d in self.order if d in counts for s in self.stream(d).take(counts[d])]
        mine = rank_share(list(enumerate(drawn)), self.ctx)
        global_index = [i for i, _ in mine]
        prompts = [p for _, p in mine]
        template = cfg.rollout.template
        prompt_ids = encode_prompts(self.policy.tokenizer,
                                    [apply_template(s.messages, template) for _, s in prompts])
        t0 = time.perf_counter()
        G = cfg.grpo.group_size
        with self.full_params():
            completions = self.backend.generate(
                prompt_ids, num_samples=G, max_new_tokens=cfg.rollout.max_new_tokens,
                temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                seed=cfg.train.seed * 1_000_003 + step + 1_000_000_007 * self.ctx.rank)
        rollout_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        results: list[Any] = [None] * len(completions)
        for d in counts:
            idx = [i for i, c in enumerate(completions) if prompts[c.prompt_index][0] == d]
            if idx:
                scored = score_responses(self.domains[d], [prompts[completions[i].prompt_index][1] for i in idx],
                                         [completions[i].text for i in idx], template)
                for i, r in zip(idx, scored):
                    results[i] = r
        reward_s = time.perf_counter() - t1
        rows = []
        for c, r in zip(completions, results):
            d, sample = prompts[c.prompt_index]
            rows.append(Scored(d, global_index[c.prompt_index], list(c.prompt_ids), list(c.completion_ids), r.score, sample.uid,
                               sample.messages[-1]["content"], c.text, {**r.parts, **r.info}))
        return rows, {"time/rollout_s": rollout_s, "time/reward_s": reward_s}

    def learn(self, scored: Sequence[Scored], step: int, stage: Stage | None = None,
              keep_domain_grads: bool = False) -> tuple[StepOutcome, list[float | None]]:
        """GRPO update from scored completions (`group_size` consecutive rows per prompt). Returns the step's
        outcome (metrics include the per-domain reward statistics) and each row's advantage (None = excluded)."""
        cfg = self.cfg
        G = cfg.grpo.group_size
        if len(scored) % G:
            raise ValueError(f"{len(scored)} scored rows do not form groups of grpo.group_size={G}")
        if self.ctx.distributed:
            check_groups_local([s.group for s in scored], G, self.ctx)
        advantages: list[float | None] = [None] * len(scored)
        metrics: dict[str, float] = {}
        graphs_before = compiled_graphs()
        stage_domains = [d for d in self.order if stage is None or d in stage.weights]
        for d in stage_domains:
            groups = [g for g in range(0, len(scored), G) if scored[g].domain == d]
            if not groups:
                continue
            rewards = [scored[g + k].reward for g in groups for k in range(G)]
            ga = group_advantages(rewards, G, cfg.grpo.adv_eps)
            for j, g in enumerate(groups):
                advantages[g : g + G] = ga.advantages[j * G : (j + 1) * G]
            scored_r = [r for r in rewards if r is not None]
            mean = sum(scored_r) / len(scored_r) if scored_r else float("nan")
            metrics.update({
                f"train/{d}/reward_mean": mean,
                f"train/{d}/reward_std": (sum((r - mean) ** 2 for r in scored_r) / len(scored_r)) ** 0.5
                if scored_r else float("nan"),
                f"train/{d}/reward_none_frac": 1 - len(scored_r) / len(rewards),
                f"train/{d}/response_tokens_mean": sum(len(scored[g + k].completion_ids) for g in groups
                                                       for k in range(G)) / len(rewards),
                f"train/{d}/zero_std_group_frac": ga.zero_std_groups / ga.num_groups,
                f"train/{d}/num_samples": float(len(rewards)),
            })
        samples = [TrainSample(s.domain, s.prompt_ids, s.completion_ids, a)
                   for s, a in zip(scored, advantages) if a is not None and s.completion_ids]
        if self.reference is not None:
            if self.micro_batch_unit == "tokens":  # reference passes batched by the step's token budget
                self.reference.max_tokens = self.token_budget.value if self.token_budget else self.micro_batch_size
            with self.full_params():  # LoRA's reference is the policy itself with adapters off
                refs = self.reference.logprobs(samples) if samples else []
            for s, ref in zip(samples, refs):
                s.ref_logp = ref
        pad_id = self.policy.tokenizer.pad_token_id
        try:
            if self.ctx.distributed:
                outcome = distributed_update(
                    self.model, self.optimizer, samples, stage_domains, self.settings, step=step, pad_id=pad_id,
                    micro_batch_size=self.micro_batch_size, unit=self.micro_batch_unit, ctx=self.ctx,
                    parallel=self.parallel, keep_domain_grads=keep_domain_grads)
            else:
                budget = self.token_budget
                if budget is not None:
                    self.micro_batch_size = budget.value
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                schedule = plan_schedule(samples, stage_domains, self.micro_batch_size, self.micro_batch_unit,
                                         packed=self.settings.pack)
                outcome = update(self.model, self.optimizer, samples, schedule, self.settings, step=step,
                                 pad_id=pad_id, keep_domain_grads=keep_domain_grads)
                if budget is not None:
                    largest = max((forward_tokens([len(samples[i].prompt_ids) + len(samples[i].completion_ids)
                                                    for i in mb.indices], self.settings.pack)
                                   for mb in schedule.micro_batches if mb.indices), default=0)
                    free, _ = torch.cuda.mem_get_info()
                    outcome.metrics["train/micro_batch_tokens"] = float(self.micro_batch_size)
                    budget.observe(base, torch.cuda.max_memory_allocated(), largest,
                                   free + torch.cuda.memory_reserved())
        except torch.OutOfMemoryError as e:
            raise torch.OutOfMemoryError(
                f"out of memory in the training step: lower train.micro_batch_size (now {self.micro_batch_size}"
                f" {self.micro_batch_unit}), rollout.max_new_tokens ({cfg.rollout.max_new_tokens}), "
                f"grpo.prompts_per_step ({cfg.grpo.prompts_per_step}); or set surgery.buffer_dtype=bfloat16, "
                f"model.gradient_checkpointing=true, model.lora.r>0. ({e})") from e
        outcome.metrics.update(metrics)
        outcome.metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]
        outcome.metrics["train/new_compiled_graphs"] = float(compiled_graphs() - graphs_before)
        if self.ctx.distributed:  # this rank's numbers -> the step's (every rank gets the same dict)
            tokens = {f"tokens/{d}": float(sum(len(s.completion_ids) for s in samples if s.domain == d))
                      for d in stage_domains}
            tokens["tokens"] = sum(tokens.values())
            outcome.metrics = gather_metrics(outcome.metrics, tokens, self.ctx)
        return outcome, advantages

    def data_state(self) -> dict[str, list[int]]:
        return {d: s.state() for d, s in self.streams.items()}


# ------------------------------------------------------------------------------------------------------ eval


def evaluate(run: Run, tag: str, run_dir: Path, step: int | None = None,
             stage: str | None = None) -> dict[str, dict[str, float]]:
    """Greedy held-out eval of every domain -> RUN/eval/<tag>.json (mgs.eval.results format; `stage` names the
    training stage it follows); returns
    {domain: {metric, score, stderr, proxy}} with score and stderr in percent."""
    from mgs.eval.results import SetInfo, write_eval
    from mgs.eval.runner import evaluate_domain

    cfg = run.cfg
    run.ensure_reserved()
    results, infos = {}, {}
    for spec in cfg.domains:
        if spec.eval_limit == 0:  # this domain is not evaluated (e.g. no held-out split)
            continue
        name = spec.name or spec.kind
        domain = run.domains[name]
        results[name] = evaluate_domain(run.backend, run.policy.tokenizer, domain, run.eval_samples(spec),
                                        max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                                        template=cfg.rollout.template, seed=cfg.train.seed,
                                        batch_size=run.eval_batch_size())
        proxy = spec.kind == "chat" and spec.params.get("reward", "similarity-proxy") == "similarity-proxy"
        infos[name] = SetInfo(domain=name, proxy=proxy, note="offline similarity proxy reward" if proxy else "",
                              settings={"greedy": True, "limit": spec.eval_limit})
    payload = write_eval(run_dir / "eval" / f"{tag}.json", results, infos, tag=tag, model=run.policy.name, step=step,
                         stage=stage)
    return {n: {"metric": s["main_metric"], "score": s["score"], "stderr": s["stderr"], "proxy": s["proxy"]}
            for n, s in payload["sets"].items()}


# ------------------------------------------------------------------------------------------------------ the loop


class _Interrupt:
    """First Ctrl-C: finish the current step, checkpoint, stop. Second: abandon the step (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> "_Interrupt":
        with contextlib.suppress(ValueError):  # not the main thread: no handler, Ctrl-C behaves as usual
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[mgs] interrupt: finishing this step, then writing a checkpoint (Ctrl-C again to abandon the step)")

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def join_processes(cfg: Config) -> tuple[DistContext, bool]:
    """The process group of this run: torchrun's for train.parallel=ddp|fsdp2, a single process otherwise.
    Returns (context, whether this call created the group and should end it)."""
    import torch.distributed

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.train.parallel == "none":
        if world > 1:
            raise ValueError(f"train.parallel=none under torchrun with {world} processes: every rank would train "
                             "alone into the same run directory; add train.parallel=ddp (or fsdp2)")
        return DistContext.single(), False
    created = not torch.distributed.is_initialized()
    device = cfg.model.device if cfg.model.device not in ("auto", "cuda") else "auto"
    return init_from_env(device=device), created


def load_policy_ranked(cfg: Config, ctx: DistContext):
    """Load the policy on every rank, rank 0 first: it alone converts and caches a model alias (e.g. the GGUF);
    the others then read the cache."""
    if ctx.is_main:
        policy = load_policy_for(cfg, ctx.device if ctx.distributed else None)
    ctx.barrier()
    if not ctx.is_main:
        policy = load_policy_for(cfg, ctx.device)
    return policy


def train(cfg: Config, run_dir: str | Path | None = None, *, resume: bool = False, policy=None,
          before_eval: dict | None = None) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (default cfg.train.out_dir); returns the summary (also RUN/summary.json).
    Under torchrun with train.parallel=ddp|fsdp2 every rank calls this; rank 0 alone writes the run directory."""
    run_dir = Path(run_dir or cfg.train.out_dir)
    ckpt = checkpoint.latest(run_dir) if resume else None
    if not resume and (run_dir / "metrics.jsonl").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                              "train.out_dir")
    ctx, owns_group = join_processes(cfg)
    try:
        return _train(cfg, run_dir, ctx, ckpt, policy, before_eval)
    finally:
        if owns_group:
            import mgs.dist

            mgs.dist.shutdown()


def _train(cfg: Config, run_dir: Path, ctx: DistContext, ckpt: Path | None, policy, before_eval) -> dict[str, Any]:
    main = ctx.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if policy is None and ctx.distributed:
        policy = load_policy_ranked(cfg, ctx)
    run = Run(cfg, policy=policy, ctx=ctx)
    start = 1
    if ckpt is not None:
        state = _load(run, ckpt)
        for d, pos in state["data"].items():
            run.stream(d).restore(pos)
        if "reference" in state and run.reference is not None:
            run.reference.load(state["reference"])
        start = state["step"] + 1
        if main:
            kept = [m for m in read_metrics(run_dir) if m["step"] < start]  # drop steps logged after the checkpoint
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))
    logger = RunLogger(run_dir, tensorboard=cfg.logging.tensorboard, wandb_project=cfg.logging.wandb,
                       progress=cfg.logging.progress, total_steps=run.plan.total_steps, initial_step=start - 1,
                       desc=cfg.strategy.name, config=to_dict(cfg)) if main else None
    t_run = time.perf_counter()
    before = before_eval
    if before is None and cfg.eval.before and start == 1:
        before = _evaluate_main(run, "before", run_dir, step=0)
    stage_of_reset = -1
    status, step, done = "finished", start - 1, start - 1
    with _Interrupt() as interrupt:
        try:
            for step in range(start, run.plan.total_steps + 1):
                t_step = time.perf_counter()
                si = run.plan.stage_at(step)
                stage = run.plan.stages[si]
                if (cfg.strategy.reset_reference_per_stage and run.reference is not None and si > 0
                        and step == sum(s.steps for s in run.plan.stages[:si]) + 1 and stage_of_reset != si):
                    run.reference.reset_to_policy()
                    stage_of_reset = si
                scored, times = run.rollout(step, stage)
                keep = step in cfg.diagnostics.save_domain_grads_steps
                outcome, advantages = run.learn(scored, step, stage, keep_domain_grads=keep)
                done = step
                if torch.cuda.is_available():
                    times["mem/peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
                times["time/step_s"] = time.perf_counter() - t_step
                times = gather_metrics(times, {}, ctx)  # times and memory: the slowest / fullest rank
                metrics = {"step": step, "stage": stage.name, **outcome.metrics, **times}
                rows = [{"uid": s.uid, "domain": s.domain, "prompt": s.prompt, "response": s.response,
                         "reward": s.reward, "reward_info": s.reward_info, "advantage": a, "_group": s.group}
                        for s, a in zip(scored, advantages)] if cfg.logging.save_completions else []
                if ctx.distributed and cfg.logging.save_completions:  # every rank's completions, back in the global prompt order
                    rows = sorted((r for part in ctx.all_gather_object(rows) for r in part), key=lambda r: r["_group"])
                if main:
                    logger.log(metrics)
                    if cfg.logging.save_completions:
                        logger.write_jsonl(f"completions/step_{step:06d}.jsonl",
                                           [{k: v for k, v in r.items() if k != "_group"} for r in rows])
                    if outcome.surgery_stats is not None:  # global on every rank (reduced Gramians)
                        logger.write_json(f"surgery/step_{step:06d}.json", outcome.surgery_stats.to_dict())
                    if outcome.domain_grads is not None:  # full replicas under ddp (fsdp2 refused at start)
                        logger.write_grads(step, outcome.domain_grads)
                if run.plan.eval_each_stage and step == sum(s.steps for s in run.plan.stages[: si + 1]):
                    _evaluate_main(run, f"stage_{si + 1}_{stage.name}", run_dir, step=step, stage=stage.name)
                if cfg.train.save_every and step % cfg.train.save_every == 0:
                    _save(run, run_dir, step)
                stop = interrupt.requested
                if ctx.distributed:  # Ctrl-C reaches the ranks at different moments: stop together
                    stop = bool(ctx.max_ints([int(stop)])[0])
                if stop:
                    status = "interrupted"
                    break
        except KeyboardInterrupt:
            status = "interrupted"  # the abandoned step never reached the optimizer: checkpoint the previous one
            if ctx.distributed:  # the other ranks may be inside a collective: no collective checkpoint
                raise
    final_wanted = cfg.train.save_final or status != "finished"  # an interrupted run always keeps its state
    if done >= 1 and final_wanted and checkpoint.latest(run_dir) != checkpoint.step_dir(run_dir, done):
        _save(run, run_dir, done)
    after = None
    if status == "finished" and cfg.eval.after:
        after = _evaluate_main(run, "after", run_dir, step=done)
    summary = None
    if main:
        logger.close()
        summary = _summary(cfg, run, run_dir, status, done, before, after, time.perf_counter() - t_run)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if status == "finished" and cfg.eval.benchmarks:
        # after summary.json says "finished": a benchmark eval cut short leaves a trained run that `mgs eval RUN`
        # can still evaluate from its final checkpoint
        bench = _evaluate_benchmarks(run, run_dir, step=done)
        if main:
            summary["eval"]["bench"] = bench
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return ctx.broadcast_object(summary)


def _evaluate_main(run: Run, tag: str, run_dir: Path, step: int,
                   stage: str | None = None) -> dict[str, dict[str, float]]:
    """Rank 0 evaluates (the others wait inside the full-parameter context); every rank gets the results."""
    with run.full_params():
        result = evaluate(run, tag, run_dir, step=step, stage=stage) if run.ctx.is_main else None
        return run.ctx.broadcast_object(result)


def _evaluate_benchmarks(run: Run, run_dir: Path, step: int) -> dict[str, dict[str, float]] | None:
    """`eval.benchmarks` on rank 0 with the trained policy and the run's rollout backend (its compiled decode step
    and cache, reserved at the first rollout) -> RUN/eval/bench.json (+ scores), the file `mgs eval RUN --tag bench`
    writes; returns {set: {metric, score, stderr, proxy}} (percent), None on the other ranks."""
    from mgs.eval.results import write_eval
    from mgs.eval.suite import format_table, run_benchmarks

    with run.full_params():
        result = None
        if run.ctx.is_main:
            t0 = time.perf_counter()
            run.ensure_reserved()
            results, infos = run_benchmarks(run.backend, run.policy.tokenizer, run.benchmarks(), run.suite_settings(),
                                            log=lambda line: print(f"[mgs] bench {line}", flush=True))
            payload = write_eval(run_dir / "eval" / "bench.json", results, infos, tag="bench",
                                 model=f"{run_dir.name} (in-process, step {step})", step=step)
            print(format_table(payload) + f"\n[mgs] benchmarks: {time.perf_counter() - t0:.1f} s", flush=True)
            result = {n: {"metric": v["main_metric"], "score": v["score"], "stderr": v["stderr"], "proxy": v["proxy"]}
                      for n, v in payload["sets"].items()}
        run.ctx.barrier()
    return result


def _save(run: Run, run_dir: Path, step: int) -> None:
    reset = run.cfg.strategy.reset_reference_per_stage and run.reference is not None
    state = {"data": run.data_state(), "strategy": run.cfg.strategy.name}
    if not run.ctx.distributed:
        checkpoint.save(run_dir, step, model=run.policy.model, tokenizer=run.policy.tokenizer, optimizer=run.optimizer,
                        state=state, reference=run.reference.state() if reset else None)
        return
    # collective: every rank writes its shards (DCP) into the temporary folder, rank 0 publishes it
    ctx = run.ctx
    tmp = checkpoint.begin(run_dir, step) if ctx.is_main else None
    tmp = Path(ctx.broadcast_object(str(tmp) if tmp else None))
    dist_checkpoint.save(tmp, run.model, run.optimizer, ctx,
                         extra={"reference": run.reference.state()} if reset else None)
    if ctx.is_main:
        run.policy.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        checkpoint.publish(tmp, run_dir, step, {**state, "format": "dcp", "world_size": ctx.world_size})
    ctx.barrier()


def _load(run: Run, path: Path) -> dict[str, Any]:
    """Restore a checkpoint of either format: DCP (written by any number of ranks; loads on any number, also one)
    or the single-process one."""
    if checkpoint.is_dcp(path):
        extra = dist_checkpoint.load(path, run.model, run.optimizer) or {}
        state = checkpoint.read_state(path)
        if extra.get("reference") is not None:
            state["reference"] = extra["reference"]
        return state
    if run.ctx.distributed:
        raise ValueError(f"checkpoint {path} was written by a single process (train.parallel=none); resume it with "
                         "train.parallel=none, or start a new run directory for a multi-process run")
    return checkpoint.load(path, model=run.policy.model, optimizer=run.optimizer)


def _summary(cfg: Config, run: Run, run_dir: Path, status: str, steps: int, before, after, time_s: float) -> dict:
    rows = read_metrics(run_dir)
    train_rewards = {}
    for d in run.order:
        series = [m[f"train/{d}/reward_mean"] for m in rows if m.get(f"train/{d}/reward_mean") is not None]
        if series:
            train_rewards[d] = {"first": series[0], "last": series[-1], "mean": sum(series) / len(series)}
    conflicts = {}
    for key in sorted({k for m in rows for k in m if k.startswith("surgery/cos/")}):
        pair = key.split("/", 2)[2]
        cos = [m[key] for m in rows if m.get(key) is not None]
        frac = [m[f"surgery/conflict_frac/{pair}"] for m in rows if m.get(f"surgery/conflict_frac/{pair}") is not None]
        conflicts[pair] = {"cos_mean": sum(cos) / len(cos), "negative_cos_steps_frac": sum(c < 0 for c in cos) / len(cos),
                           "conflict_frac_mean": sum(frac) / len(frac) if frac else float("nan")}
    step_s = [m["time/step_s"] for m in rows if "time/step_s" in m]
    return {"strategy": cfg.strategy.name, "status": status, "steps": steps, "model": run.policy.name,
            "model_note": run.policy.note, "surgery": {"granularity": cfg.surgery.granularity,
                                                       "method": cfg.surgery.method},
            "eval": {"before": before, "after": after}, "train_reward": train_rewards, "conflicts": conflicts,
            "skipped_steps": int(sum(m.get("train/skipped", 0) for m in rows)),
            "step_s_mean": sum(step_s) / len(step_s) if step_s else None, "time_s": time_s}


# ------------------------------------------------------------------------------------------------------ compare


def run(cfg: Config, *, resume: bool = False) -> dict[str, Any]:
    """`train`, or with `train.compare` every listed strategy from the same initial weights (RUN/<strategy>/),
    sharing one before-eval; writes RUN/summary.json {strategy: summary} in that case."""
    root = Path(cfg.train.out_dir)
    if not cfg.train.compare:
        return train(cfg, root, resume=resume)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    policy = load_policy_for(cfg)
    initial = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    before = None
    summaries: dict[str, Any] = {}
    for name in cfg.train.compare:
        sub = dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, name=name),
                                  train=dataclasses.replace(cfg.train, compare=(), out_dir=str(root / name)))
        if resume and (root / name / "summary.json").is_file():
            done = json.loads((root / name / "summary.json").read_text())
            if done.get("status") == "finished":
                summaries[name] = done
                before = before or done["eval"]["before"]
                continue
        policy.model.load_state_dict(initial)
        if before is None and cfg.eval.before:
            before = evaluate(Run(sub, policy=policy), "before", root, step=0)
        if before is not None:  # each sub-run directory stays self-contained
            (root / name / "eval").mkdir(parents=True, exist_ok=True)
            for f in (root / "eval").glob("before*"):
                shutil.copy(f, root / name / "eval" / f.name)
        summaries[name] = train(sub, root / name, resume=resume, policy=policy, before_eval=before)
        if summaries[name]["status"] != "finished":
            break
    (root / "summary.json").write_text(json.dumps(summaries, indent=1))
    return summaries


def format_table(summaries: dict[str, dict]) -> str:
    """The closing table: held-out eval before/after (+- standard error), train reward, conflicts, time."""
    names = list(summaries)
    first = summaries[names[0]]
    lines = [f"model: {first['model']} ({first['model_note']})"]
    header = f"{'':28s}" + "".join(f"{n:>22s}" for n in names)
    lines.append(header)
    domains = list((first["eval"].get("before") or first["eval"].get("after") or first["train_reward"] or {}).keys())
    if not domains:
        domains = list(first["train_reward"])

    def fmt(e):
        return "-" if not e else f"{e['score']:.1f} +- {e['stderr']:.1f}{'*' if e.get('proxy') else ''}"

    for d in domains:
        before = (first["eval"].get("before") or {}).get(d)
        if before:
            lines.append(f"{'eval ' + d + ' before':28s}" + "".join(f"{fmt(before):>22s}" for _ in names))
        lines.append(f"{'eval ' + d + ' after':28s}" + "".join(
            f"{fmt((summaries[n]['eval'].get('after') or {}).get(d)):>22s}" for n in names))
    for d in first["train_reward"]:
        lines.append(f"{'train reward ' + d + ' first->last':28s}" + "".join(
            f"{_fl(summaries[n]['train_reward'].get(d)):>22s}" for n in names))
    pairs = sorted({p for n in names for p in summaries[n]["conflicts"]})
    for p in pairs:
        lines.append(f"{'cos ' + p:28s}" + "".join(
            f"{_pair(summaries[n]['conflicts'].get(p), 'cos_mean'):>22s}" for n in names))
        lines.append(f"{'groups conflicting ' + p:28s}" + "".join(
            f"{_pair(summaries[n]['conflicts'].get(p), 'conflict_frac_mean', signed=False):>22s}" for n in names))
    lines.append(f"{'steps (skipped)':28s}" + "".join(
        f"{str(summaries[n]['steps']) + ' (' + str(summaries[n]['skipped_steps']) + ')':>22s}" for n in names))
    lines.append(f"{'mean step time s':28s}" + "".join(
        f"{summaries[n]['step_s_mean'] or float('nan'):>22.1f}" for n in names))
    if any(e.get("proxy") for s in summaries.values() for tag in ("before", "after")
           for e in (s["eval"].get(tag) or {}).values()):
        lines.append("eval scores in percent, +- standard error over prompts; * = proxy reward, not a benchmark")
    return "\n".join(lines)


def _fl(r):
    return "-" if not r else f"{r['first']:.3f} -> {r['last']:.3f}"


def _pair(c, key, signed: bool = True):
    """A summary number: cosines with their sign, fractions (never negative) without one."""
    return "-" if not c else (f"{c[key]:+.3f}" if signed else f"{c[key]:.3f}")
