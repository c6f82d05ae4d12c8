"""torchrun worker of tests/dist/test_equivalence.py: the distributed step (DDP and FSDP2, gloo, CPU) against the
single-process step on the same global batch, plus the official MGS code's labelling mistake.

Every rank builds the same tiny Llama, the same global batch of fixed rollouts (scored by the trainer's toy domain
reward, so advantages vary) and takes its UNEVEN share of prompts (a prompt's G samples on one rank); the
single-process reference is computed on every rank on an unwrapped copy (no collectives). Rank 0 writes the
measured relative errors to the JSON file given as argv[1]; the test asserts on them.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import transformers

from mgs.dist import PARALLEL, checkpoint, context_of_group, distributed_update
from mgs.domains.toy import ToyDomain
from mgs.rl.grpo import group_advantages
from mgs.rl.step import StepSettings, TrainSample, plan_schedule, update

torch.set_num_threads(1)
G = 4  # samples per prompt
PAD = 0
DOMAINS = {"a": ToyDomain("a", chars="aeiou"), "b": ToyDomain("b", chars="bcdfghjklmnp"),
           "c": ToyDomain("c", chars="qrstvwxyz")}  # disjoint sets: the domains pull towards different tokens
# (domain, rank) of each prompt: uneven per domain, some rank without any prompt of a domain
LAYOUT = {
    2: [("a", 0), ("a", 0), ("a", 1), ("b", 1), ("b", 1)],
    3: [("a", 0), ("a", 0), ("a", 1), ("b", 1), ("b", 2), ("b", 2), ("c", 0)],
}


def tiny_model() -> torch.nn.Module:
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                      tie_word_embeddings=True, pad_token_id=PAD)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def text(ids: list[int]) -> str:
    return "".join(chr(ord("a") + t % 26) for t in ids)


def global_batch(world: int, seed: int) -> list[tuple[int, TrainSample]]:
    """(rank, sample) for every completion of every prompt; rewards from the toy domains."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for domain, rank in LAYOUT[world]:
        prompt = torch.randint(1, 64, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
        comps = [torch.randint(1, 64, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(G)]
        rewards = [r.score for r in DOMAINS[domain].score([None] * G, [text(c) for c in comps])]
        adv = group_advantages(rewards, G).advantages
        out += [(rank, TrainSample(domain, prompt, c, a)) for c, a in zip(comps, adv)]
    return out


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def clean(name: str) -> str:
    return name.removeprefix("module.")


def rel_err(a: dict, b: dict) -> float:
    num = sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in b)
    den = sum(float(b[n].double().pow(2).sum()) for n in b)
    return (num / den) ** 0.5


def cosine(a: dict, b: dict) -> float:
    dot = sum(float((a[n].double() * b[n].double()).sum()) for n in a)
    na = sum(float(a[n].double().pow(2).sum()) for n in a) ** 0.5
    nb = sum(float(b[n].double().pow(2).sum()) for n in b) ** 0.5
    return dot / (na * nb)


def full_domain_grads(kept, model, parallel) -> dict:
    """Kept per-domain buffers (FSDP2: local shards) -> full tensors by parameter name."""
    params = {clean(n): p for n, p in model.named_parameters()}
    out = {}
    for domain, grads in kept.items():
        out[domain] = {}
        for name, g in grads.items():
            p = params[clean(name)]
            if parallel.sharded:
                from torch.distributed.tensor import DTensor

                g = DTensor.from_local(g, p.device_mesh, p.placements, shape=p.shape, stride=p.stride()).full_tensor()
            out[domain][clean(name)] = g
    return out


def adamw(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)


def run_steps(model, samples_per_step, order, settings, *, dist=None, mbs=3, keep=False, opt=None, first=1):
    """Optimizer steps `first`, `first + 1`, ... on the given batches; returns the outcomes."""
    opt = opt or adamw(model)
    outcomes = []
    for step, samples in enumerate(samples_per_step, start=first):
        if dist is None:
            sched = plan_schedule(samples, order, mbs)
            outcomes.append(update(model, opt, samples, sched, settings, step=step, pad_id=PAD, keep_domain_grads=keep))
        else:
            ctx, parallel = dist
            outcomes.append(distributed_update(model, opt, samples, order, settings, step=step, pad_id=PAD,
                                               micro_batch_size=mbs, unit="samples", ctx=ctx, parallel=parallel,
                                               keep_domain_grads=keep))
    return outcomes


def params_of(model) -> dict:
    return {clean(n): full(p.detach()).clone() for n, p in model.named_parameters()}


def mistaken_domain_grads(base, batch, ctx, order) -> dict:
    """What the official code computes on this rank: every rank back-propagates ITS next sample (a shuffled batch,
    so domains differ across ranks at the same moment), the gradient is reduced over ranks (what DDP/FSDP do; we
    sum instead of averaging so the scale matches ours) and labelled with the LOCAL sample's domain."""
    import torch.distributed as dist

    model = copy.deepcopy(base)
    samples = [s for _, s in batch]
    shuffled = [samples[i] for i in torch.randperm(len(samples), generator=torch.Generator().manual_seed(7))]
    usable = len(shuffled) - len(shuffled) % ctx.world_size  # equal counts per rank (DDP needs them)
    mine = shuffled[ctx.rank : usable : ctx.world_size]  # domains mixed across ranks
    samples = shuffled[:usable]
    denominator = float(sum(len(s.completion_ids) for s in samples))
    from mgs.rl.step import micro_batch_loss

    sums = {d: {n: torch.zeros_like(p) for n, p in model.named_parameters()} for d in order}
    for s in mine:
        model.zero_grad(set_to_none=True)
        loss, _ = micro_batch_loss(model, [s], StepSettings(), PAD, denominator)
        loss.backward()
        for n, p in model.named_parameters():
            g = p.grad.clone()
            dist.all_reduce(g)
            sums[s.domain][n] += g  # the rank-reduced gradient, labelled with this rank's sample's domain
    return sums, samples


def resume_elsewhere(base, ckpt_dir, ctx, order, settings) -> dict:
    """Load the 2-process FSDP2 checkpoint on this world size (FSDP2 and one process), take step 3 on both."""
    parallel = PARALLEL.get("fsdp2")
    model = parallel.wrap(copy.deepcopy(base), ctx)
    opt = adamw(model)
    extra = checkpoint.load(ckpt_dir, model, opt)
    single = copy.deepcopy(base)
    single_opt = adamw(single)
    checkpoint.load(ckpt_dir, single, single_opt)
    loaded, loaded_single = params_of(model), params_of(single)
    batch = global_batch(ctx.world_size, seed=3)
    run_steps(model, [[s for r, s in batch if r == ctx.rank]], order, settings, dist=(ctx, parallel), opt=opt, first=3)
    run_steps(single, [[s for _, s in batch]], order, settings, opt=single_opt, first=3)
    after, after_single = params_of(model), params_of(single)
    return {"loaded_vs_saved": rel_err(loaded, extra["params"]),
            "single_loaded_vs_saved": rel_err(loaded_single, extra["params"]),
            "step3_rel_err": rel_err({n: after[n] - loaded[n] for n in loaded},
                                     {n: after_single[n] - loaded[n] for n in loaded})}


def main() -> None:
    import faulthandler
    import os

    import torch.distributed as dist

    faulthandler.dump_traceback_later(float(os.environ.get("MGS_TEST_HANG_S", "240")), exit=True)  # a hang fails

    dist.init_process_group("gloo")
    ctx = context_of_group("cpu")
    mode, ckpt_dir = sys.argv[2], sys.argv[3]
    world = ctx.world_size
    order = sorted({d for d, _ in LAYOUT[world]})
    batches = [global_batch(world, seed) for seed in (1, 2)]
    mine = [[s for r, s in b if r == ctx.rank] for b in batches]
    everything = [[s for _, s in b] for b in batches]
    base = tiny_model()
    results: dict = {"world": world, "domains": order}

    mgs = StepSettings(per_domain=True, surgery=True, method="pcgrad", granularity="module", grad_clip=0.05, seed=3)
    ref_model = copy.deepcopy(base)
    ref = run_steps(ref_model, everything, order, mgs, keep=True)
    ref_params = params_of(ref_model)
    ref_grads = ref[0].domain_grads
    results["ref_grad_norms"] = {d: ref[0].metrics[f"grad/{d}/norm"] for d in order}
    initial = params_of(base)
    results["ref_conflicted_frac"] = [o.metrics["surgery/groups_conflicted_frac"] for o in ref]
    plain_model = copy.deepcopy(base)  # the same steps without surgery: PCGrad must change the update
    run_steps(plain_model, everything, order, StepSettings(per_domain=False, surgery=False, grad_clip=0.05))
    plain = params_of(plain_model)
    results["pcgrad_vs_sum"] = rel_err({n: ref_params[n] - initial[n] for n in initial},
                                       {n: plain[n] - initial[n] for n in initial})

    for name in ("ddp", "fsdp2"):
        parallel = PARALLEL.get(name)
        model = parallel.wrap(copy.deepcopy(base), ctx)
        opt = adamw(model)
        outs = run_steps(model, mine, order, mgs, dist=(ctx, parallel), keep=True, opt=opt)
        if name == "fsdp2" and mode == "save":  # resumed by the 3-process run
            checkpoint.save(ckpt_dir, model, opt, ctx, extra={"params": params_of(model), "step": 2})
        grads = full_domain_grads(outs[0].domain_grads, model, parallel)
        after = params_of(model)
        results[name] = {
            "grad_rel_err": {d: rel_err(grads[d], ref_grads[d]) for d in order},
            "param_rel_err": rel_err(after, ref_params),
            "update_rel_err": rel_err({n: after[n] - initial[n] for n in initial},
                                      {n: ref_params[n] - initial[n] for n in initial}),
            "grad_norm": [o.metrics["train/grad_norm"] for o in outs],
            "ref_grad_norm": [o.metrics["train/grad_norm"] for o in ref],
            "domain_norms": {d: outs[0].metrics[f"grad/{d}/norm"] for d in order},
            "cos": {k: v for k, v in outs[0].metrics.items() if k.startswith("surgery/cos/")},
            "ref_cos": {k: v for k, v in ref[0].metrics.items() if k.startswith("surgery/cos/")},
        }
        # method=sum equals plain Mixed RL (no per-domain gradients) on the same ranks and on one process
        summed = StepSettings(per_domain=True, surgery=True, method="sum", granularity="module", grad_clip=0.05)
        mixed = StepSettings(per_domain=False, surgery=False, grad_clip=0.05)
        m_sum = parallel.wrap(copy.deepcopy(base), ctx)
        m_mix = parallel.wrap(copy.deepcopy(base), ctx)
        run_steps(m_sum, mine, order, summed, dist=(ctx, parallel))
        run_steps(m_mix, mine, order, mixed, dist=(ctx, parallel))
        m_ref = copy.deepcopy(base)
        run_steps(m_ref, everything, order, mixed)
        p_sum, p_mix, p_ref = params_of(m_sum), params_of(m_mix), params_of(m_ref)
        results[name]["sum_vs_mixed"] = rel_err({n: p_sum[n] - initial[n] for n in initial},
                                                {n: p_mix[n] - initial[n] for n in initial})
        results[name]["mixed_vs_single"] = rel_err({n: p_mix[n] - initial[n] for n in initial},
                                                   {n: p_ref[n] - initial[n] for n in initial})

    if mode == "load":
        results["resume"] = resume_elsewhere(base, ckpt_dir, ctx, order, mgs)
    wrong, used = mistaken_domain_grads(base, batches[0], ctx, order)
    ref_used = update(copy.deepcopy(base), adamw(base), used, plan_schedule(used, order, 3), mgs, step=1, pad_id=PAD,
                      keep_domain_grads=True).domain_grads  # the true domain gradients of the same samples
    results["mistake_grad_rel_err"] = ctx.all_gather_object({d: rel_err(wrong[d], ref_used[d]) for d in order})
    results["mistake_cos"] = ctx.all_gather_object(cosine(wrong[order[0]], wrong[order[1]]))
    results["ref_cos_first_pair"] = cosine(ref_grads[order[0]], ref_grads[order[1]])
    if ctx.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f, indent=1)
    faulthandler.cancel_dump_traceback_later()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
