"""Test helpers: Llama-style gradient dicts with built-in conflicts, and an independent float64 reference.

The reference works on flattened float64 vectors with plain loops (PCGrad exactly as Yu et al. 2020, Alg. 1);
it shares no code with the Gramian implementation. It takes the domain visiting orders the implementation
recorded, so it checks the math given the orders (the orders themselves are tested separately).
"""

from __future__ import annotations

import torch


def llama_shapes(layers: int = 2, hidden: int = 8, intermediate: int = 12, vocab: int = 20, kv: int = 4) -> dict:
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (hidden, hidden),
                p + "self_attn.k_proj.weight": (kv, hidden),
                p + "self_attn.v_proj.weight": (kv, hidden),
                p + "self_attn.q_proj.bias": (hidden,),
                p + "self_attn.o_proj.weight": (hidden, hidden),
                p + "mlp.gate_proj.weight": (intermediate, hidden),
                p + "mlp.up_proj.weight": (intermediate, hidden),
                p + "mlp.down_proj.weight": (hidden, intermediate),
                p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,),
            }
        )
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    return shapes


DOMAIN_NAMES = ["math", "chat", "if", "code"]


def conflicting_grads(num_domains: int, seed: int = 0, dtype=torch.float64, shapes=None) -> dict:
    """Per-domain gradients where domain k = (random) - (random mix of earlier domains): many negative inner
    products, per tensor differently, so some groups conflict and others don't."""
    gen = torch.Generator().manual_seed(seed)
    shapes = shapes or llama_shapes()
    grads: dict[str, dict[str, torch.Tensor]] = {d: {} for d in DOMAIN_NAMES[:num_domains]}
    for name, shape in shapes.items():
        rows = []
        for k in range(num_domains):
            g = torch.randn(shape, generator=gen, dtype=torch.float64)
            for prev in rows:
                g = g + (float(torch.randn((), generator=gen, dtype=torch.float64)) - 0.6) * 1.5 * prev
            rows.append(g * float(torch.rand((), generator=gen, dtype=torch.float64) * 3 + 0.1))
        for d, g in zip(DOMAIN_NAMES, rows):
            grads[d][name] = g.to(dtype)
    return grads


def reference(domain_grads, groups, domains, method, orders=None):
    """float64 loop reference. orders[group_index][i] = list of domain indices visited by domain i."""
    combined = {}
    for gi, names in enumerate(groups.values()):
        vecs = [torch.cat([domain_grads[d][n].double().reshape(-1) for n in names]) for d in domains]
        if method == "sum":
            total = torch.zeros_like(vecs[0])
            for v in vecs:
                total = total + v
        elif method == "pcgrad":
            total = torch.zeros_like(vecs[0])
            for i, own in enumerate(vecs):
                g = own.clone()
                for j in orders[gi][i]:
                    other = vecs[j]
                    sq = float(other @ other)
                    if sq == 0:
                        continue
                    dot = float(g @ other)
                    if dot < 0:
                        g = g - dot / sq * other
                total = total + g
        else:
            raise ValueError(method)
        offset = 0
        for n in names:
            size = domain_grads[domains[0]][n].numel()
            combined[n] = total[offset : offset + size].reshape(domain_grads[domains[0]][n].shape)
            offset += size
    return combined


def stack(domain_grads, domains):
    from mgs.surgery import StackedGrads

    names = list(domain_grads[domains[0]])
    return StackedGrads(domains, {n: torch.stack([domain_grads[d][n] for d in domains]) for n in names})
