"""`mgs train [CONFIG.yaml] [section.key=value ...] [--steps N] [--resume]`: multi-domain GRPO training.

Without a config file it runs the embedded default (mgs/configs/default.yaml): SmolLM2-135M-Instruct on three small
offline domains, Mixed RL then MGS from the same initial weights, and a side-by-side table. Every run writes the
run directory of docs/contracts.md; `--help-config` lists every key with its default and meaning. Several processes:
`torchrun --nproc-per-node N -m mgs train CONFIG train.parallel=ddp|fsdp2` (rank 0 prints and writes).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mgs.commands import COMMANDS


def split_args(items: list[str]) -> tuple[str | None, list[str]]:
    """First item is the config file unless it looks like an override (`key=value`)."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    bad = [i for i in items if "=" not in i]
    if bad:
        raise SystemExit(f"mgs train: {bad[0]!r} is neither the first argument (the config file) nor an override "
                         "section.key=value")
    return None, items


@COMMANDS.register("train")
class TrainCommand:
    help = "train a policy with multi-domain GRPO (mixed, sequential, mgs); no arguments = the CPU demo"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("args", nargs="*", metavar="CONFIG | KEY=VALUE",
                       help="a YAML config (optional, first) and dotted overrides, e.g. surgery.granularity=tensor")
        p.add_argument("--steps", type=int, help="shortcut for train.steps=N (e.g. --steps 1 for a smoke run)")
        p.add_argument("--out", help="shortcut for train.out_dir=DIR")
        p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its last checkpoint")
        p.add_argument("--help-config", action="store_true", help="list every config key with its default and exit")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from mgs.config import ConfigError, config_reference, load_config

        if args.help_config:
            print("\n".join(config_reference()))
            return 0
        path, overrides = split_args(args.args)
        if args.steps is not None:
            overrides.append(f"train.steps={args.steps}")
        if args.out:
            overrides.append(f"train.out_dir={args.out}")
        try:
            cfg = load_config(path, overrides)
        except ConfigError as e:
            print(f"mgs train: config error: {e}")
            return 2
        from mgs.rl import trainer

        out = Path(cfg.train.out_dir)
        existing = [out / "metrics.jsonl", out / "summary.json", *out.glob("*/metrics.jsonl")]
        if not args.resume and any(p.exists() for p in existing):
            print(f"mgs train: {out} already holds a run; pass --resume to continue it, or train.out_dir=NEW / --out NEW")
            return 2
        main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks (every rank gets the summary)
        if main:
            print(f"mgs train: {'default demo' if path is None else path} -> {out}")
        result = trainer.run(cfg, resume=args.resume)
        summaries = result if cfg.train.compare else {cfg.strategy.name: result}
        interrupted = [n for n, s in summaries.items() if s["status"] != "finished"]
        if not main:
            return 130 if interrupted else 0
        print()
        print(trainer.format_table(summaries))
        print(f"\nrun directory: {out}  (metrics.jsonl, completions/, surgery/, eval/, checkpoints/, summary.json)")
        if interrupted:
            print(f"interrupted ({', '.join(interrupted)}): continue with the same command plus --resume")
            return 130
        return 0
