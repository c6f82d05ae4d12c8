"""One optimizer step from scored samples: per-domain backward passes, surgery (or sum), clip, AdamW.

Why this shape: MGS needs one gradient per domain, and `method=sum` must reproduce Mixed RL exactly. So the step's
micro-batches run grouped by domain in a fixed order, and domain d's backward accumulates into row d of a per-tensor
buffer `[D, *shape]` (`param.grad` IS a view of that row when the buffer has the parameter's dtype; otherwise the
gradient is copied there after the domain's last micro-batch). Every micro-batch's loss is divided by the step's
GLOBAL completion-token count (token mean over the whole batch, all domains), so the domain gradients add up to the
Mixed-RL gradient of the same batch. Then surgery (mgs.surgery.resolve) or the plain sum is combined in place into
row 0 (resolve's `out` may be row 0 of the stacked buffer), which becomes `.grad`: MGS holds D gradients where Mixed
RL holds one, the (D-1)-buffer memory target (the copy path writes a separate `.grad`). Then the grad norm is
clipped (after surgery) and the optimizer steps.

The (domain, micro-batch) schedule and the loss denominator are explicit values (`Schedule`) computed before any
forward pass, so a distributed caller can build a domain-synchronous schedule (same domain on every rank at the same
time, empty micro-batches where a rank has fewer samples, a denominator summed over ranks) and inject its reduce
functions (`reduce_grad`, `surgery_reduce`). No torch.distributed here.

Policies (explicit, logged):
- a domain of the step with no trainable sample (all its rewards None) is *absent*: it gets no buffer, surgery sees
  only the present domains, and `train/<domain>/absent` = 1;
- a non-finite loss or gradient skips the optimizer step (gradients dropped, `train/skipped` = 1);
- samples whose reward is None never reach this module (the trainer drops them: no advantage, no loss).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from mgs.rl.grpo import grpo_loss_terms


@dataclass
class TrainSample:
    """A scored completion ready for the loss. `ref_logp` [len(completion_ids)] when a KL term is used."""

    domain: str
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    ref_logp: torch.Tensor | None = None


@dataclass(frozen=True)
class MicroBatch:
    domain: str
    indices: tuple[int, ...]  # into the step's sample list; empty = a zero-weight placeholder (distributed sync)


@dataclass(frozen=True)
class Schedule:
    """What the step will run, fixed up front: the domain order, micro-batches grouped by domain in that order,
    and the loss denominator (completion tokens of the whole step, every domain, every rank)."""

    domains: tuple[str, ...]
    micro_batches: tuple[MicroBatch, ...]
    loss_denominator: float
    absent: tuple[str, ...] = ()


def plan_schedule(
    samples: Sequence[TrainSample],
    domain_order: Sequence[str],
    micro_batch_size: int,
    unit: str = "samples",
    loss_denominator: float | None = None,
    packed: bool = False,
) -> Schedule:
    """Group `samples` by domain (in `domain_order`), sort each domain's samples by length (bucketing: less
    padding) and cut them into micro-batches of at most `micro_batch_size` samples, or padded tokens (rows x
    longest prompt+completion; a longer sample gets a micro-batch of its own). `packed` (the forward packs each
    micro-batch, StepSettings.pack): a token budget counts real tokens, and the fewest micro-batches within it are
    planned (plan_packed_micro_batches). Domains of `domain_order` without samples are `absent`. The denominator
    defaults to the completion tokens of all `samples`."""
    if unit not in ("samples", "tokens"):
        raise ValueError(f"micro-batch unit must be 'samples' or 'tokens', got {unit!r}")
    unknown = {s.domain for s in samples} - set(domain_order)
    if unknown:
        raise ValueError(f"samples of domains {sorted(unknown)} are not in the step's domain order {list(domain_order)}")
    present, absent, mbs = [], [], []
    for domain in domain_order:
        idx = [i for i, s in enumerate(samples) if s.domain == domain]
        if not idx:
            absent.append(domain)
            continue
        present.append(domain)
        lengths = [len(samples[i].prompt_ids) + len(samples[i].completion_ids) for i in idx]
        if unit == "tokens":  # padded size rows x longest row (packed: sum of lengths) <= micro_batch_size
            from mgs.rl.logprobs import plan_micro_batches, plan_packed_micro_batches

            chunks = (plan_packed_micro_batches if packed else plan_micro_batches)(lengths, micro_batch_size)
        else:
            order = sorted(range(len(idx)), key=lambda j: (-lengths[j], j))
            chunks = [order[k : k + micro_batch_size] for k in range(0, len(order), micro_batch_size)]
        mbs.extend(MicroBatch(domain, tuple(idx[j] for j in chunk)) for chunk in chunks)
    if loss_denominator is None:
        loss_denominator = float(sum(len(s.completion_ids) for s in samples))
    return Schedule(tuple(present), tuple(mbs), float(loss_denominator), tuple(absent))


@dataclass(frozen=True)
class StepSettings:
    """The step's own knobs (built by the trainer from the grpo/optim/surgery sections)."""

    clip_eps: float = 0.2
    dual_clip: float = 3.0
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    grad_clip: float = 1.0
    per_domain: bool = True  # keep one gradient per domain (mgs, or monitor mode)
    surgery: bool = True  # combine with surgery (False: the plain sum, stats only if per_domain)
    granularity: str = "module"
    method: str = "pcgrad"
    seed: int = 0
    buffer_dtype: torch.dtype | None = torch.float32  # None: each parameter's own dtype (in-place, least memory)
    family: str | None = None  # model family for the partition rules
    temperature: float = 1.0  # sampling temperature: log-probs are those of the distribution that was sampled
    compile: bool = False  # torch.compile the forward (mgs.rl.logprobs.token_logprobs)
    pack: bool = False  # padding-free micro-batches (token_logprobs(packed=True); plan_schedule(packed=True))


@dataclass
class StepOutcome:
    metrics: dict[str, float]
    surgery_stats: Any = None  # stats object of mgs.surgery (to_dict()/summary()), None without per-domain grads
    domain_grads: dict[str, dict[str, torch.Tensor]] | None = None  # CPU copies, only when asked


def _batch(samples: Sequence[TrainSample], pad_id: int):
    """mgs.rl.logprobs.build_batch in the samples' own order: right-padded rows, per-row completion start. On the
    CPU: token_logprobs works out the token layout there and uploads it without a host sync."""
    from mgs.rl.logprobs import build_batch

    return build_batch(samples, pad_token_id=pad_id, sort_by_length=False)


def _rows(values: Sequence[torch.Tensor], samples: Sequence[TrainSample], width: int) -> torch.Tensor:
    """Per-sample completion vectors as a [B, width] CPU tensor aligned with token_logprobs' output (column 0 = first
    completion token)."""
    out = torch.zeros((len(samples), width), dtype=torch.float32)
    for b, (s, v) in enumerate(zip(samples, values)):
        out[b, : len(s.completion_ids)] = torch.as_tensor(v, dtype=torch.float32).cpu()
    return out


def micro_batch_loss(model: torch.nn.Module, samples: Sequence[TrainSample], settings: StepSettings, pad_id: int,
                     denominator: float):
    """Forward one micro-batch; returns (loss_sum / denominator, LossTerms). Everything it sends to the device goes
    in non-blocking copies from pinned memory (`mgs.rl.logprobs.upload`), so the host can queue the next
    micro-batch while the GPU works on this one."""
    from mgs.rl.logprobs import token_logprobs, upload

    batch = _batch(samples, pad_id)
    logp, entropy = token_logprobs(model, batch.input_ids, batch.attention_mask, start=batch.start,
                                   temperature=settings.temperature, entropy_grad=bool(settings.entropy_coef),
                                   compile=settings.compile, packed=settings.pack)
    host = [batch.completion_mask, torch.tensor([s.advantage for s in samples], dtype=torch.float32)]
    if settings.kl_coef:
        if any(s.ref_logp is None for s in samples):
            raise ValueError("kl_coef != 0 needs reference log-probs on every sample (TrainSample.ref_logp)")
        host.append(_rows([s.ref_logp for s in samples], samples, logp.shape[1]))
    mask, adv, *ref = upload(host, logp.device)  # where token_logprobs computed
    terms = grpo_loss_terms(logp, mask, adv, ref_logp=ref[0] if ref else None, entropy=entropy,
                            clip_eps=settings.clip_eps, dual_clip=settings.dual_clip, kl_coef=settings.kl_coef,
                            entropy_coef=settings.entropy_coef)
    return terms.loss_sum / denominator, terms


@torch.inference_mode()
def reference_logprobs(model: torch.nn.Module, samples: Sequence[TrainSample], pad_id: int,
                       batch_size: int = 16, temperature: float = 1.0,
                       max_tokens: int | None = None, packed: bool = False) -> list[torch.Tensor]:
    """Reference log-probs of each sample's completion tokens (once per step, only when kl_coef != 0), in the
    samples' order. Batches: `batch_size` samples in order, or with `max_tokens` length-bucketed groups of at most
    that many padded tokens (inference keeps no activations, so a training token budget is safe here). `packed`:
    padding-free forwards, `max_tokens` then counts real tokens (as the training step with StepSettings.pack)."""
    from mgs.rl.logprobs import plan_micro_batches, plan_packed_micro_batches, token_logprobs

    if max_tokens:
        planner = plan_packed_micro_batches if packed else plan_micro_batches
        groups = planner([len(s.prompt_ids) + len(s.completion_ids) for s in samples], max_tokens)
    else:
        groups = [list(range(i, min(i + batch_size, len(samples)))) for i in range(0, len(samples), batch_size)]
    out: list[torch.Tensor | None] = [None] * len(samples)
    for group in groups:
        chunk = [samples[i] for i in group]
        batch = _batch(chunk, pad_id)
        logp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, start=batch.start,
                                 return_entropy=False, temperature=temperature, packed=packed)
        for b, (i, s) in enumerate(zip(group, chunk)):
            out[i] = logp[b, : len(s.completion_ids)].float().cpu()
    return out  # type: ignore[return-value]


def _trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _norm_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)  # float32, float64 for float64 buffers


def _sq_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Summed squared L2 norms of `tensors`, [1] float64 on the CPU: computed on the device (float32 per-tensor
    norms) and read back once, instead of one host sync per tensor (which cost more than the math: see
    benchmarks/bench_mgs_overhead.py). A NaN or inf anywhere makes the sum non-finite: that is the step's
    non-finite-gradient check. (The per-domain norms come from the surgery's Gramian diagonals instead.)"""
    if not tensors:
        return torch.zeros(1, dtype=torch.float64)
    norms = torch.stack([torch.linalg.vector_norm(t, dtype=_norm_dtype(t)).double() for t in tensors])
    return norms.pow(2).sum(0, keepdim=True).cpu()


def update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: Sequence[TrainSample],
    schedule: Schedule,
    settings: StepSettings,
    *,
    step: int,
    pad_id: int,
    reduce_grad: Callable[[torch.Tensor], None] | None = None,
    surgery_reduce: Callable[[Any], Any] | None = None,
    keep_domain_grads: bool = False,
    placeholder: TrainSample | None = None,
    sync: Callable[[bool], Any] | None = None,
    local: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> StepOutcome:
    """Backward per domain (or once for everything), combine, clip, step. See the module docstring.

    Hooks for mgs.dist (defaults = one process): `placeholder` is run (loss x 0) for an empty micro-batch so that
    every rank runs the same forwards/backwards; `sync(last)` is the context of a micro-batch's forward+backward,
    `last` = the gradient is read after it (the domain's last micro-batch, or the step's without per-domain
    gradients); `local(t)` is the rank-local part of a parameter / gradient (a shard); `surgery_reduce` also
    turns the ranks' partial squared norms into global ones."""
    params = _trainable(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer.zero_grad(set_to_none=True)
    domains = schedule.domains
    # In place (the memory target: D buffers in all, not D + the combined .grad): each domain's backward
    # accumulates straight into its buffer row (`p.grad` IS `buf[d]`) and the combine writes row 0, which then
    # becomes `.grad`. Needs unsharded parameters and buffers in the parameter dtype; else grads are copied.
    in_place = settings.per_domain and bool(domains) and all(
        settings.buffer_dtype in (None, p.dtype) and not hasattr(p, "to_local") for _, p in params)
    buffers: dict[str, torch.Tensor] = {}
    if in_place:
        buffers = {name: torch.zeros((len(domains), *p.shape), dtype=p.dtype, device=p.device) for name, p in params}
    parts: list[torch.Tensor] = []  # per micro-batch [loss, pg, kl, entropy, clipped, tokens], read back once
    part_domain: list[int] = []
    local = local or (lambda t: t)
    in_sync = sync or (lambda last: contextlib.nullcontext())
    t0 = time.perf_counter()
    for d, domain in enumerate(domains):
        runs = [m for m in schedule.micro_batches if m.domain == domain]
        if in_place:
            for name, p in params:
                p.grad = buffers[name][d]  # AccumulateGrad adds into it in place (tested)
        for k, mb in enumerate(runs):
            last = k == len(runs) - 1 and (settings.per_domain or d == len(domains) - 1)
            if not mb.indices:
                if placeholder is not None:  # zero-weight: keeps this rank in step with the others' collectives
                    with in_sync(last):
                        (micro_batch_loss(model, [placeholder], settings, pad_id, 1.0)[0] * 0.0).backward()
                continue
            with in_sync(last):
                loss, terms = micro_batch_loss(model, [samples[i] for i in mb.indices], settings, pad_id,
                                               schedule.loss_denominator)
                loss.backward()
            parts.append(torch.stack([torch.as_tensor(v, dtype=torch.float32, device=loss.device).reshape(())
                                      for v in (loss.detach(), terms.pg_sum, terms.kl_sum, terms.entropy_sum,
                                                terms.clipped_tokens, terms.tokens)]))
            part_domain.append(d)
        if reduce_grad is not None and (settings.per_domain or d == len(domains) - 1):
            for _, p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                reduce_grad(p.grad)
        if settings.per_domain:
            for name, p in params:
                buf = buffers.get(name)
                if buf is None:
                    shard = local(p.detach())
                    buf = buffers[name] = torch.zeros((len(domains), *shard.shape), device=shard.device,
                                                      dtype=settings.buffer_dtype or shard.dtype)
                if p.grad is not None and not (in_place and p.grad.data_ptr() == buf[d].data_ptr()):
                    buf[d].copy_(local(p.grad))  # a wrapper replaced the view (or the copy path): copy it
                p.grad = None
    train_s = time.perf_counter() - t0
    totals = torch.stack(parts).double().cpu() if parts else torch.zeros((0, 6), dtype=torch.float64)
    sums = dict(zip(("loss", "pg", "kl", "entropy", "clipped", "tokens"), totals.sum(0).tolist()))
    finite = math.isfinite(sums["loss"])  # a non-finite micro-batch loss makes the sum non-finite
    dom_entropy: dict[str, list[float]] = {d: [0.0, 0.0] for d in domains}
    for row, d in zip(totals.tolist(), part_domain):
        dom_entropy[domains[d]][0] += row[3]
        dom_entropy[domains[d]][1] += row[5]

    metrics: dict[str, float] = {"time/train_s": train_s}
    for domain in domains:
        ent, tok = dom_entropy[domain]
        metrics[f"train/{domain}/entropy"] = ent / tok if tok else float("nan")
    for domain in schedule.absent:
        metrics[f"train/{domain}/absent"] = 1.0
    stats = None
    kept = None
    t1 = time.perf_counter()
    if settings.per_domain:
        metrics["mem/domain_buffers_gb"] = sum(b.numel() * b.element_size() for b in buffers.values()) / 1e9
        if keep_domain_grads:
            kept = {dom: {n: buffers[n][d].float().cpu().clone() for n, _ in params} for d, dom in enumerate(domains)}
        if domains and in_place:  # mgs.surgery's combine may write row 0 of the stacked buffer
            _, stats = _combine(buffers, domains, settings, step, surgery_reduce,
                                {name: buffers[name][0] for name, _ in params})
            for name, p in params:
                p.grad = buffers[name][0]
            finite = finite and bool(stats.finite)
        elif domains:
            out = {}
            for name, p in params:
                p.grad = torch.empty_like(p)
                out[name] = local(p.grad)
            _, stats = _combine(buffers, domains, settings, step, surgery_reduce, out)
            finite = finite and bool(stats.finite)
        if stats is not None:  # per-domain norms from the (rank-reduced) Gramians' diagonals: no extra pass
            for domain, sq in zip(domains, stats.sq_norms().tolist()):
                metrics[f"grad/{domain}/norm"] = math.sqrt(sq) if sq >= 0 else float("nan")
    else:
        metrics["mem/domain_buffers_gb"] = 0.0  # non-finite .grad: caught by the grad norm below
    metrics["time/surgery_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    grad_sq = float(_sq_norms([local(p.grad) for _, p in params if p.grad is not None])[0])
    grad_norm = math.sqrt(float(_ranks_total(torch.tensor([grad_sq], dtype=torch.float64), surgery_reduce)[0]))
    finite = finite and math.isfinite(grad_norm)
    if finite:
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in params], settings.grad_clip)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    metrics["time/optim_s"] = time.perf_counter() - t2
    tokens = sums["tokens"] or float("nan")
    metrics.update({
        "train/loss": sums["loss"],
        "train/pg_loss": sums["pg"] / tokens,
        "train/kl": sums["kl"] / tokens,
        "train/entropy": sums["entropy"] / tokens,
        "train/clip_frac": sums["clipped"] / tokens,
        "train/grad_norm": grad_norm,
        "train/skipped": 0.0 if finite else 1.0,
    })
    if stats is not None:
        metrics.update(stats.summary(prefix="surgery/"))
    return StepOutcome(metrics, stats, kept)


def _ranks_total(partials: torch.Tensor, reduce) -> torch.Tensor:
    """This rank's partial sums -> the global ones through the injected reduce (identity in one process)."""
    if reduce is None:
        return partials
    reduced = reduce(partials)
    return partials if reduced is None else reduced


def _combine(buffers: dict[str, torch.Tensor], domains: Sequence[str], settings: StepSettings, step: int,
             surgery_reduce, out=None):
    """Surgery (or the plain sum with stats, for monitor mode) on the stacked buffers via mgs.surgery.resolve."""
    from mgs.surgery import StackedGrads, resolve

    method = settings.method if settings.surgery else "sum"
    return resolve(StackedGrads(list(domains), buffers), granularity=settings.granularity, method=method,
                   seed=settings.seed, step=step, reduce=surgery_reduce, family=settings.family,
                   domains=list(domains), out=out)

