"""`mgs report RUN_DIR [RUN_DIR ...]`: plots and tables of one or more runs as HTML (self-contained) + markdown,
including paired differences between strategies on the same prompts (`--paired-ref`, `--paired-interval`), a
computed summary of the findings first, and the author's conclusion (`--conclusion FILE`) after it."""

from __future__ import annotations

from mgs.commands import COMMANDS


def _pairs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        domain, eq, path = item.partition("=")
        if not eq or not domain or not path:
            raise SystemExit(f"--baseline-single expects DOMAIN=RUN_DIR, got {item!r}")
        out[domain] = path
    return out


@COMMANDS.register("report")
class ReportCommand:
    help = "Build an HTML + markdown report (curves, gradient conflicts, strategies x benchmarks) from run dirs."

    @staticmethod
    def add_arguments(p) -> None:
        p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (several: compared side by side)")
        p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report for one run, ./report)")
        p.add_argument("--baseline-single", nargs="*", metavar="DOMAIN=RUN_DIR",
                       help="single-domain runs, for the rigidity of sequential runs")
        p.add_argument("--paired-ref", default=None, metavar="STRATEGY",
                       help="strategy label the paired differences are taken against (default: mixed if present, "
                            "else the first run's)")
        p.add_argument("--paired-interval", default="normal", choices=["normal", "bootstrap"],
                       help="95%% interval of a paired mean difference: normal (mean ± 1.96 stderr) or a seeded "
                            "bootstrap over prompts (default: %(default)s)")
        p.add_argument("--conclusion", default=None, metavar="FILE",
                       help="markdown file with the author's conclusion (what held, what did not, against the paper): "
                            "shown verbatim after the computed summary")

    @staticmethod
    def run(args) -> int:
        from pathlib import Path

        from mgs.reports.build import build_report

        out = args.out or (str(Path(args.runs[0]) / "report") if len(args.runs) == 1 else "report")
        from mgs.reports.paired import UnknownReference

        try:
            paths = build_report(args.runs, out, _pairs(args.baseline_single), paired_ref=args.paired_ref,
                                 paired_interval=args.paired_interval, conclusion=args.conclusion)
        except (UnknownReference, FileNotFoundError) as e:  # the message says what to choose or give
            raise SystemExit(str(e)) from None
        print(f"report: {paths['html']}\nmarkdown: {paths['markdown']}")
        return 0
