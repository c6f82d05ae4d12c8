"""Split a model's parameters into the groups inside which gradient surgery runs (the "modules" of MGS).

Granularities (a registry, `GRANULARITIES`):
- `tensor`: every parameter tensor is its own group (what the official MGS code does),
- `module`: per decoder layer i, `layers.i.attn` (attention + the norms on its input/output) and `layers.i.mlp`
  (MLP + its norms), plus `embed` (token/position embeddings) and `head` (final norm + LM head),
- `block`: one group `layers.i` per decoder layer, plus `embed` and `head`,
- `global`: the whole model in one group (plain PCGrad),
- `regex`: only the user's rules (ordered (regex, group-name template) pairs; first match wins).
User rules given with any other granularity are tried first. A parameter nothing matches gets a group of its own
(named by the parameter) and is listed in `Groups.unmatched`: never dropped.

peft names (`base_model.model.` prefix, `...q_proj.lora_A.default.weight`, `...base_layer.weight`) are
reduced to the name of the module they adapt before matching, so adapters group with their module. A tied
embedding / LM-head tensor appears once in `named_parameters()` (under the embedding's name) and lands in `embed`.
Group order is deterministic: the order in which groups first appear in `param_names`.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from mgs.registry import Registry
from mgs.surgery.families import FAMILIES, Family, detect_family

# peft wrappers: removing these gives the name of the adapted module's parameter.
_PEFT_PREFIX = re.compile(r"^base_model\.model\.")
_PEFT_INNER = re.compile(
    r"\.(?:lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|modules_to_save)\.[^.]+(?=\.|$)"
    r"|\.(?:base_layer|original_module)(?=\.|$)"
)
# A decoder layer: `<prefix>.layers.<i>.<inner>` (Llama, Qwen, Gemma, Mistral), `h.<i>` (GPT-2), `blocks`, `layer`.
_LAYER = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<stack>layers|h|blocks|layer)\.(?P<index>\d+)\.(?P<inner>.+)$")

Rules = Sequence[tuple[str, str]]


def canonical_name(param_name: str) -> str:
    """Strip peft wrapping: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight'
    -> 'model.layers.0.self_attn.q_proj.weight'."""
    return _PEFT_INNER.sub("", _PEFT_PREFIX.sub("", param_name))


class Groups(dict):
    """`{group_name: [param_name, ...]}` in deterministic order, plus what the partition could not place
    (`unmatched`: parameter names that got a group of their own), the model family used (`family`) and the
    granularity that made it."""

    def __init__(
        self, groups: dict[str, list[str]], unmatched: list[str], family: str | None, granularity: str = "custom"
    ) -> None:
        super().__init__(groups)
        self.unmatched = unmatched
        self.family = family
        self.granularity = granularity


@dataclass(frozen=True)
class _Context:
    """What a granularity needs besides the name: the family rules and the main decoder stack's prefix."""

    family: Family
    decoder_prefix: str | None


# A granularity maps (original name, canonical name, context) to a group name, or None if it can't place it.
Granularity = Callable[[str, str, _Context], "str | None"]
GRANULARITIES: Registry[Granularity] = Registry("granularity")


def _layer_group(canonical: str, ctx: _Context, with_part: bool) -> str | None:
    match = _LAYER.match(canonical)
    if match is None:
        return _outside_layers(canonical, ctx)
    prefix = match["prefix"] or ""
    base = f"layers.{match['index']}"
    if prefix != ctx.decoder_prefix:  # a second stack (e.g. a vision tower): keep it apart from the decoder
        base = f"{prefix}.{match['stack']}.{match['index']}" if prefix else f"{match['stack']}.{match['index']}"
    if not with_part:
        return base
    part = ctx.family.layer_part(match["inner"])
    return None if part is None else f"{base}.{part}"


def _outside_layers(canonical: str, ctx: _Context) -> str | None:
    if re.search(ctx.family.embed, canonical):
        return "embed"
    if re.search(ctx.family.head, canonical):
        return "head"
    return None


@GRANULARITIES.register("module")
def _module(name: str, canonical: str, ctx: _Context) -> str | None:
    return _layer_group(canonical, ctx, with_part=True)


@GRANULARITIES.register("block")
def _block(name: str, canonical: str, ctx: _Context) -> str | None:
    return _layer_group(canonical, ctx, with_part=False)


@GRANULARITIES.register("tensor")
def _tensor(name: str, canonical: str, ctx: _Context) -> str | None:
    return name


@GRANULARITIES.register("global")
def _global(name: str, canonical: str, ctx: _Context) -> str | None:
    return "global"


@GRANULARITIES.register("regex")
def _regex_only(name: str, canonical: str, ctx: _Context) -> str | None:
    return None  # the user's rules, tried before any granularity, are all there is


def _decoder_prefix(canonical_names: list[str]) -> str | None:
    """The prefix of the layer stack holding the most parameters (the decoder); other stacks keep their prefix."""
    counts = Counter((m["prefix"] or "") for m in map(_LAYER.match, canonical_names) if m is not None)
    return max(counts, key=lambda p: (counts[p], -len(p))) if counts else None


def _compile_rules(rules: Rules | None) -> list[tuple[re.Pattern, str]]:
    compiled = []
    for rule in rules or ():
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise ValueError(f"a partition rule must be a (regex, group-name template) pair; got {rule!r}")
        pattern, template = rule
        try:
            compiled.append((re.compile(pattern), template))
        except re.error as err:
            raise ValueError(f"partition rule regex {pattern!r} does not compile: {err}") from None
    return compiled


def partition(
    param_names: Sequence[str],
    granularity: str = "module",
    rules: Rules | None = None,
    family: str | None = None,
) -> Groups:
    """Group parameter names: `{group_name: [param_name, ...]}` (a `Groups` dict with `.unmatched`, `.family`).

    `rules`: ordered (regex, template) pairs tried first (`re.search` on the full name; the group name is
    `match.expand(template)`, so `r"layers\\.(\\d+)\\." -> r"L\\1"` works). `family`: force the naming rules
    (`"llama"`, `"qwen2"`, `"qwen3"`, `"mistral"`, `"smollm"`, `"gemma2"`, `"gemma3"`, `"gpt2"`); default: detected.
    """
    names = list(param_names)
    if len(set(names)) != len(names):
        dupes = sorted(n for n, c in Counter(names).items() if c > 1)
        raise ValueError(f"parameter names must be unique; repeated: {dupes[:5]}")
    if granularity == "regex" and not rules:
        raise ValueError("granularity='regex' needs rules=[(regex, group-name template), ...]")
    assign = GRANULARITIES.get(granularity)
    compiled = _compile_rules(rules)
    canonical = [canonical_name(n) for n in names]
    fam = FAMILIES.get(family) if family is not None else detect_family(canonical)
    ctx = _Context(family=fam, decoder_prefix=_decoder_prefix(canonical))

    groups: dict[str, list[str]] = {}
    unmatched: list[str] = []
    for name, canon in zip(names, canonical):
        group = next((m.expand(t) for p, t in compiled if (m := p.search(name)) is not None), None)
        if group is None:
            group = assign(name, canon, ctx)
        if group is None:
            unmatched.append(name)
            group = name
        groups.setdefault(group, []).append(name)
    granularity_name = granularity if not compiled or granularity == "regex" else f"{granularity}+rules"
    return Groups(groups, unmatched, fam.name if granularity in ("module", "block") else None, granularity_name)


# Partitions memoised by `cached_partition` (a trainer has one or two layouts: the same names every step).
_CACHED_PARTITIONS = 16


@functools.lru_cache(maxsize=_CACHED_PARTITIONS)
def _partition_memo(names: tuple[str, ...], granularity: str, rules: tuple | None, family: str | None) -> Groups:
    return partition(names, granularity, rules=rules, family=family)


def cached_partition(
    param_names: Sequence[str], granularity: str = "module", rules: Rules | None = None, family: str | None = None
) -> Groups:
    """`partition(...)`, memoised on (names, granularity, rules, family): resolve calls this every step with the
    same names, and the regex work over every name (~1 ms for a 272-tensor model) would be redone each time.
    The returned `Groups` is shared between calls: read it, never modify it (use `partition` for a copy of
    your own). Unhashable input goes straight to `partition` (and its checks) uncached."""
    try:
        frozen = None if rules is None else tuple(tuple(r) if isinstance(r, (tuple, list)) else r for r in rules)
        key = (tuple(param_names), granularity, frozen, family)
        hash(key)
    except TypeError:
        return partition(param_names, granularity, rules=rules, family=family)
    return _partition_memo(*key)
