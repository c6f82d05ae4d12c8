"""Instruction following (IFEval / IFBench): verifiable-constraint prompts and their reward.

`checkers` loads the maintained instruction registries offline, `generator` makes seeded training prompts,
`domain` is the `Domain` registered as `ifeval` (and `ifbench`).
"""

from mgs.domains.ifeval.checkers import CHECKERS, InstructionSet
from mgs.domains.ifeval.domain import IFBenchDomain, IFEvalDomain, read_ifeval_jsonl
from mgs.domains.ifeval.generator import BASE_TASKS, PRESETS, generate_prompts

__all__ = ["BASE_TASKS", "CHECKERS", "PRESETS", "IFBenchDomain", "IFEvalDomain", "InstructionSet",
           "generate_prompts", "read_ifeval_jsonl"]
