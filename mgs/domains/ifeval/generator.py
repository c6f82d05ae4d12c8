"""Seeded training prompts for instruction following: one of our short writing tasks + 1-3 verifiable constraints.

Constraint types and their kwargs are drawn at random; each constraint's text is the checker's own
`build_description(**kwargs)`, so the prompt says exactly what the checker verifies. Constraints in one prompt are
compatible: never two that the registry's conflict table (made symmetric) pairs, nor two of `EXTRA_CONFLICTS`
(pairs the table misses that can't both hold, e.g. all-lowercase + an end phrase with capitals). Our base tasks
are none of IFEval's / IFBench's prompts (tested against the files), so evaluation on them stays held-out.

Splits: a base task belongs to "train" or "test" by a hash of its text (`split_of_task`, about a quarter of the
tasks are test), and a split's prompts are built only from its own tasks, so a generated test prompt can never
equal a training prompt, whatever the seeds or counts (`check_disjoint` verifies it on generated sets).

Presets (`PRESETS`): `small` (the embedded default for a 135M model: short tasks and constraints such a model
sometimes satisfies, so G=4 groups have reward variance) and `full` (all 25 IFEval types, kwargs drawn by the
registry itself, like IFEval's own generator).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable

from mgs.domains.ifeval.checkers import InstructionSet
from mgs.registry import Registry

BASE_TASKS: tuple[str, ...] = (
    "Write a short note to a neighbor asking them to water your plants while you are away.",
    "Describe your ideal weekend morning.",
    "Explain why people enjoy walking in parks.",
    "Write a few lines about the smell of rain.",
    "Give advice to someone starting their first job.",
    "Describe a kitchen after a big family dinner.",
    "Write a short thank-you message to a bus driver.",
    "Explain how to make a cup of tea.",
    "Describe the sound of the sea at night.",
    "Write a short review of an imaginary bakery.",
    "Tell a tiny story about a lost umbrella.",
    "Explain why sleep is important for students.",
    "Describe a busy train station in the morning.",
    "Write a short invitation to a picnic by the lake.",
    "Give three reasons to learn to cook.",
    "Describe a snowy street in a small town.",
    "Write a message to a friend who just moved to a new city.",
    "Explain what makes a good library.",
    "Describe the first day of spring.",
    "Write a short poem about a cat sleeping in the sun.",
    "Explain how to plant a tomato seed.",
    "Describe an old bicycle.",
    "Write a short welcome message for new members of a chess club.",
    "Give tips for keeping a desk tidy.",
    "Describe a market stall that sells fruit.",
    "Tell a short story about a robot learning to paint.",
    "Explain why bees matter to farmers.",
    "Write a note reminding your family to recycle.",
    "Describe a quiet evening at home.",
    "Write a short speech for a school sports day.",
    "Explain how a library card works.",
    "Describe the view from a mountain top.",
    "Write a short apology for being late to a meeting.",
    "Give advice on how to save a little money each week.",
    "Describe a street musician playing a violin.",
    "Tell a tiny story about a dog who finds a ball.",
    "Explain what a compass is used for.",
    "Write a postcard from a seaside holiday.",
    "Describe your favorite kind of weather.",
    "Write a short product description for a wooden chair.",
    "Explain why reading to children is helpful.",
    "Describe a campfire under the stars.",
    "Write a short letter to your future self.",
    "Give tips for a first camping trip.",
    "Describe a garden in late summer.",
    "Tell a short story about a boat on a calm river.",
    "Explain how to fold a paper airplane.",
    "Write a short motivational message for a runner.",
    "Describe a crowded beach on a hot day.",
    "Write a note to a teacher thanking them for a good year.",
    "Explain why drinking water is good for you.",
    "Describe a rainy afternoon in a cafe.",
    "Write a short advertisement for a lemonade stand.",
    "Give advice to someone who wants to start running.",
    "Describe an owl sitting on a branch.",
    "Tell a tiny story about a key that opens a secret door.",
    "Explain how to care for a houseplant.",
    "Write a short birthday message for a grandmother.",
    "Describe the moon over a quiet village.",
    "Write a few sentences about why friends matter.",
    "Explain how to wash a bicycle.",
    "Describe a morning at a farm.",
    "Write a short guide to packing a school bag.",
    "Describe a lighthouse during a storm.",
)

EXTRA_CONFLICTS: dict[str, set[str]] = {
    # an all-lowercase / all-capital response can't also contain mixed-case fixed text
    "change_case:english_lowercase": {"startend:end_checker", "detectable_content:postscript",
                                      "detectable_format:multiple_sections", "combination:repeat_prompt"},
    "change_case:english_capital": {"startend:end_checker", "detectable_content:postscript",
                                    "detectable_format:multiple_sections", "combination:repeat_prompt"},
    # a forbidden word may be the required keyword / end phrase / first word
    "keywords:forbidden_words": {"keywords:existence", "keywords:frequency", "startend:end_checker",
                                 "length_constraints:nth_paragraph_first_word"},
}

_KEYWORDS = ("water", "light", "friend", "home", "today", "happy", "simple", "world", "time", "green", "small",
             "morning", "love", "people", "good")
_FORBIDDEN = ("very", "really", "also", "just", "many", "great", "always", "because")
_END_PHRASES = ("Thank you.", "That is all.", "The end.", "Have a nice day.", "See you soon.")

SPLITS = ("train", "test")
TEST_BUCKETS = 1
"""A base task is in the test split iff sha256(task) % 4 < TEST_BUCKETS."""


def split_of_task(task: str) -> str:
    """'test' or 'train': fixed by the base task's text, so train and test prompts never share a task."""
    return "test" if int(hashlib.sha256(task.encode()).hexdigest(), 16) % 4 < TEST_BUCKETS else "train"


def tasks_of_split(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    return tuple(t for t in BASE_TASKS if split_of_task(t) == split)


def check_disjoint(train_rows: list[dict[str, Any]], test_rows: list[dict[str, Any]]) -> None:
    """Raise if a test prompt also occurs among the training prompts, or shares its base task with one."""
    train_prompts = {r["prompt"] for r in train_rows}
    same = [r["key"] for r in test_rows if r["prompt"] in train_prompts]
    shared_tasks = {t for t in BASE_TASKS if any(r["prompt"].startswith(t) for r in train_rows)
                    and any(r["prompt"].startswith(t) for r in test_rows)}
    if same or shared_tasks:
        raise AssertionError(f"generated test prompts overlap training: same prompts {same[:3]}, shared base tasks "
                             f"{sorted(shared_tasks)[:3]}")


KwargsSampler = Callable[[random.Random, str], dict[str, Any]]  # (rng, task text) -> kwargs


@dataclass(frozen=True)
class Preset:
    """Which instruction types a preset draws and how their kwargs are drawn (None: by the registry itself)."""

    samplers: dict[str, KwargsSampler | None]
    max_constraints: int = 3


PRESETS: Registry[Callable[[], Preset]] = Registry("ifeval generator preset")


def _words(rng: random.Random, _task: str) -> dict[str, Any]:
    if rng.random() < 0.7:
        return {"relation": "less than", "num_words": rng.choice([30, 40, 60, 80, 100])}
    return {"relation": "at least", "num_words": rng.choice([10, 20, 30])}


@PRESETS.register("small")
def small_preset() -> Preset:
    """Constraints a 135M model sometimes meets: case, commas, length, end phrase, keywords, simple layout."""
    return Preset({
        "change_case:english_lowercase": lambda rng, t: {},
        "punctuation:no_comma": lambda rng, t: {},
        "length_constraints:number_words": _words,
        "startend:end_checker": lambda rng, t: {"end_phrase": rng.choice(_END_PHRASES)},
        "keywords:existence": lambda rng, t: {"keywords": rng.sample(_KEYWORDS, k=rng.choice([1, 1, 2]))},
        "keywords:forbidden_words": lambda rng, t: {"forbidden_words": rng.sample(_FORBIDDEN, k=2)},
        "length_constraints:number_paragraphs": lambda rng, t: {"num_paragraphs": rng.choice([2, 3])},
        "detectable_format:number_bullet_lists": lambda rng, t: {"num_bullets": rng.choice([2, 3, 4])},
        "detectable_format:title": lambda rng, t: {},
        "startend:quotation": lambda rng, t: {},
    })


@PRESETS.register("full")
def full_preset() -> Preset:
    """All 25 IFEval types; kwargs drawn by the registry's own `build_description` (seeded)."""
    from mgs.domains.ifeval.checkers import ifeval_instructions

    samplers: dict[str, KwargsSampler | None] = {i: None for i in ifeval_instructions().classes}
    return Preset(samplers)


def _registry_kwargs(instructions: InstructionSet, instruction_id: str, rng: random.Random) -> dict[str, Any]:
    """Let the checker draw its own kwargs (it uses the global `random`): seed it from `rng`, restore it after."""
    state = random.getstate()
    try:
        random.seed(rng.getrandbits(64))
        checker = instructions.classes[instruction_id](instruction_id)
        checker.build_description()
        kwargs = dict(checker.get_instruction_args() or {})
    finally:
        random.setstate(state)
    if instruction_id == "length_constraints:nth_paragraph_first_word":  # registry may draw nth > count
        kwargs["nth_paragraph"] = min(kwargs["nth_paragraph"], kwargs["num_paragraphs"])
    return kwargs


def _compatible(instructions: InstructionSet, a: str, b: str) -> bool:
    if b in instructions.conflicts.get(a, ()) or a in instructions.conflicts.get(b, ()):
        return False
    return b not in EXTRA_CONFLICTS.get(a, set()) and a not in EXTRA_CONFLICTS.get(b, set())


def generate_prompts(instructions: InstructionSet, preset: str, num_prompts: int, seed: int,
                     split: str = "train") -> list[dict[str, Any]]:
    """`num_prompts` IFEval-format rows (`key`, `prompt`, `instruction_id_list`, `kwargs`) built from the base tasks
    of `split` only; deterministic in (split, seed). Different seeds may repeat a prompt; different splits never."""
    tasks = tasks_of_split(split)
    spec = PRESETS.get(preset)()
    unknown = sorted(set(spec.samplers) - set(instructions.classes))
    if unknown:
        raise ValueError(f"preset {preset!r} names instruction types the {instructions.name} registry lacks: {unknown}")
    rng = random.Random(seed)
    types_ = sorted(spec.samplers)
    rows = []
    for index in range(num_prompts):
        task = rng.choice(tasks)
        num_constraints = rng.randint(1, spec.max_constraints)
        chosen: list[str] = []
        for candidate in rng.sample(types_, k=len(types_)):
            if len(chosen) == num_constraints:
                break
            if all(_compatible(instructions, candidate, c) for c in chosen):
                chosen.append(candidate)
        chosen.sort(key=lambda i: i == "combination:repeat_prompt")  # the repeated request excludes its own line
        texts, kwargs_list = [task], []
        for instruction_id in chosen:
            sampler = spec.samplers[instruction_id]
            if instruction_id == "combination:repeat_prompt":
                kwargs = {"prompt_to_repeat": " ".join(texts)}
            elif sampler is None:
                kwargs = _registry_kwargs(instructions, instruction_id, rng)
            else:
                kwargs = sampler(rng, task)
            texts.append(instructions.description(instruction_id, kwargs))
            kwargs_list.append(kwargs)
        rows.append({"key": f"gen-{preset}-{split}-{seed}-{index}", "prompt": " ".join(texts),
                     "instruction_id_list": chosen, "kwargs": kwargs_list})
    return rows
