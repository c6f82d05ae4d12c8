"""`mgs eval MODEL_OR_RUN_DIR`: benchmark a model, or a run's latest checkpoint, with the training reward code.

Writes the results JSON (RUN/eval/<tag>.json for a run dir, `--out` for a model) and prints the table with the
paper-style Total (formula in the footer). See docs/evaluation.md.
"""

from __future__ import annotations

import os

from mgs.commands import COMMANDS


@COMMANDS.register("eval")
class EvalCommand:
    help = "Evaluate a model or a run's latest checkpoint on benchmarks (GSM8K, MATH500, IFEval, IFBench, chat)."

    @staticmethod
    def add_arguments(p) -> None:
        from mgs.eval.benchmarks import BENCHMARKS, DEFAULT_BENCHMARKS

        p.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                       help="a model (alias, local folder, hub id) or a run directory (its latest checkpoint)")
        p.add_argument("--benchmarks", default=",".join(DEFAULT_BENCHMARKS),
                       help=f"comma-separated, from {BENCHMARKS.names()} (default: %(default)s)")
        p.add_argument("--data-dir", default=os.environ.get("MGS_DATA_DIR"),
                       help="folder laid out like /work/shared/data (default: $MGS_DATA_DIR; none: Hugging Face ids)")
        p.add_argument("--limit", type=int, default=None, help="at most N prompts per benchmark (quick runs)")
        p.add_argument("--samples", type=int, default=1,
                       help="k > 1: also avg@k with sampling for the math benchmarks (greedy is always reported)")
        p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of avg@k")
        p.add_argument("--max-new-tokens", type=int, default=512, help="generation length per response (tokens)")
        p.add_argument("--reward-model", default=None,
                       help="chat scorer KIND:VALUE[,key=value] (e.g. hf-classifier:/models/Skywork-Reward-V2); "
                            "without it chat uses the offline similarity proxy, labelled as a proxy")
        p.add_argument("--template", default="none",
                       help="thinking template of the prompts (none, think_response, think); a run dir uses its own")
        p.add_argument("--batch-size", type=int, default=None,
                       help="prompts per generate call (default 16 on CPU, 256 on CUDA)")
        p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                       help="compile the decode step (auto = on CUDA: ~45 s once per batch shape, then the fastest "
                            "decoding; off for short evals)")
        p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset and of sampling")
        p.add_argument("--out", default=None, help="results JSON path (default: RUN/eval/<tag>.json or ./eval_<model>.json)")
        p.add_argument("--tag", default=None, help="name of the evaluation in RUN/eval/ (default: bench_<checkpoint>)")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
        p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")

    @staticmethod
    def run(args) -> int:
        from mgs.eval.benchmarks import parse_benchmarks
        from mgs.eval.suite import SuiteSettings, evaluate_model, format_table, parse_reward_model

        if args.limit is not None and args.limit < 1:
            raise SystemExit("--limit must be >= 1")
        if args.samples < 1:
            raise SystemExit("--samples must be >= 1")
        benchmarks = parse_benchmarks(args.benchmarks)
        parse_reward_model(args.reward_model)  # fail before loading the model
        settings = SuiteSettings(data_dir=args.data_dir, limit=args.limit, samples=args.samples,
                                 sample_temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                 template=args.template, seed=args.seed, batch_size=args.batch_size,
                                 compile={"auto": None, "on": True, "off": False}[args.compile],
                                 reward_model=args.reward_model)
        payload, path = evaluate_model(args.model, benchmarks, settings, out=args.out, tag=args.tag,
                                       device=args.device, dtype=args.dtype)
        print(format_table(payload))
        print(f"results: {path}")
        return 0
