"""A small run-directory writer for diagnostics/report tests that must not wait for a training run.

It follows docs/contracts.md: config.yaml, metrics.jsonl (train/<d>/..., surgery/... from the real
`SurgeryStats.summary()`), surgery/step_*.json (the real `stats.to_dict()` of `mgs.surgery.resolve`), grads/step_*.pt
({domain: {param: tensor}}) and eval/<tag>.json (through `mgs.eval.results.write_eval`). Gradients are synthetic
but shaped like a tiny Llama's parameters, with a planted conflict: in the MLPs the chat gradient leans against the
math one, in attention it agrees, so the diagnostics have something to find.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from mgs.eval.results import SetInfo, write_eval
from mgs.eval.runner import EvalResult
from mgs.surgery import resolve


def tiny_llama_shapes(layers: int = 2, hidden: int = 8, inter: int = 16, vocab: int = 32) -> dict[str, tuple]:
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (hidden // 2, hidden),
            p + "self_attn.v_proj.weight": (hidden // 2, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
    shapes["model.norm.weight"] = (hidden,)
    return shapes


def domain_grads(step: int, shapes: dict[str, tuple]) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1000 + step)
    math_g, chat_g = {}, {}
    lean = -0.8 if step % 3 else 0.6  # whole-model cosine changes sign over steps
    for name, shape in shapes.items():
        a = torch.randn(shape, generator=gen)
        noise = torch.randn(shape, generator=gen)
        k = lean if ".mlp." in name else 0.7
        math_g[name] = a
        chat_g[name] = k * a + 0.5 * noise
    return {"math": math_g, "chat": chat_g}


def write_fixture_run(root: Path, *, steps: int = 6, seed: int = 0, method: str = "pcgrad", granularity: str = "module",
                      strategy: str = "mgs", save_grads: bool = True, evals: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {"name": "tiny:llama"},
        "domains": [{"name": "chat", "kind": "chat"}, {"name": "math", "kind": "math"}],
        "strategy": {"name": strategy, "stages": []},
        "surgery": {"granularity": granularity, "method": method, "monitor": strategy != "mgs"},
        "train": {"seed": seed, "steps": steps, "out_dir": str(root)},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    shapes = tiny_llama_shapes()
    (root / "surgery").mkdir(exist_ok=True)
    if save_grads:
        (root / "grads").mkdir(exist_ok=True)
    with (root / "metrics.jsonl").open("w") as f:
        for step in range(1, steps + 1):
            grads = domain_grads(step, shapes)
            _, stats = resolve(grads, granularity=granularity, method=method, seed=seed, step=step)
            (root / "surgery" / f"step_{step:06d}.json").write_text(json.dumps(stats.to_dict()))
            if save_grads:
                torch.save(grads, root / "grads" / f"step_{step:06d}.pt")
            row = {"step": step, "stage": "chat+math"}
            for i, d in enumerate(("chat", "math")):
                row[f"train/{d}/reward_mean"] = 0.1 * step + 0.05 * i + 0.01 * seed
                row[f"train/{d}/entropy"] = 1.0 / step + 0.1 * i
                row[f"train/{d}/response_tokens_mean"] = 20.0 + step + 3 * i
            row.update(stats.summary())
            f.write(json.dumps(row) + "\n")
    for tag, scores in (evals or {}).items():
        results, infos = {}, {}
        for name, value in scores.items():
            results[name] = EvalResult(metrics={"accuracy": value, "accuracy_stderr": 0.01}, main_metric="accuracy")
            infos[name] = SetInfo(domain=name, main_metric="accuracy")
        write_eval(root / "eval" / f"{tag}.json", results, infos, tag=tag, model="tiny", step=steps)
    return root
