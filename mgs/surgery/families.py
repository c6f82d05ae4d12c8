"""Model-family naming rules: which parameter of a decoder layer belongs to its attention and which to its MLP.

Norm names mislead, so the placement is a table per family instead of guesswork: in Llama / Qwen / Mistral /
SmolLM `post_attention_layernorm` is the MLP's *input* norm (-> mlp), while in Gemma 2/3 it normalises the
attention *output* (-> attn) and `pre_/post_feedforward_layernorm` belong to the MLP. GPT-2 names its blocks
`h.N` with `attn`/`ln_1` and `mlp`/`ln_2`. Adding a family is one `register_family(...)` call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mgs.registry import Registry


@dataclass(frozen=True)
class Family:
    """Naming rules of one model family.

    `layer_parts`: ordered (regex on the name *inside* a decoder layer, part) pairs, part in {"attn", "mlp"};
    first match wins. `embed` / `head`: regexes on names *outside* the decoder layers. `marker`: a regex that,
    found in any parameter name, identifies the family during auto-detection (None = never auto-detected).
    """

    name: str
    layer_parts: tuple[tuple[str, str], ...]
    embed: str = r"(^|\.)(embed_tokens|wte|wpe|embed_positions|word_embeddings|position_embeddings)(\.|$)"
    head: str = r"(^|\.)(norm|ln_f|final_layernorm|final_norm|lm_head)(\.|$)"
    marker: str | None = None

    def layer_part(self, inner_name: str) -> str | None:
        """'self_attn.q_proj.weight' -> 'attn'; None when no rule matches."""
        for pattern, part in self.layer_parts:
            if re.search(pattern, inner_name):
                return part
        return None


FAMILIES: Registry[Family] = Registry("model family")
# Auto-detection tries these in order; the last one (no marker) is the default.
DETECTION_ORDER: list[str] = []

# Names seen in any family as a fallback for unknown layer contents (MoE blocks, other attention spellings).
_GENERIC_PARTS: tuple[tuple[str, str], ...] = (
    (r"^(self_attn|attn|attention|self_attention)\.", "attn"),
    (r"^(mlp|block_sparse_moe|moe|feed_forward|ffn)\.", "mlp"),
)


def register_family(family: Family, aliases: tuple[str, ...] = ()) -> Family:
    for name in (family.name, *aliases):
        FAMILIES.register(name)(family)
    if family.marker is not None or family.name == "llama":
        DETECTION_ORDER.append(family.name)
    return family


register_family(
    Family(
        name="gemma2",
        layer_parts=(
            (r"^(input_layernorm|post_attention_layernorm)\.", "attn"),
            (r"^(pre_feedforward_layernorm|post_feedforward_layernorm)\.", "mlp"),
            *_GENERIC_PARTS,
        ),
        marker=r"\.pre_feedforward_layernorm\.",
    ),
    aliases=("gemma3",),
)
register_family(
    Family(
        name="gpt2",
        layer_parts=((r"^ln_1\.", "attn"), (r"^ln_2\.", "mlp"), *_GENERIC_PARTS),
        marker=r"(^|\.)h\.\d+\.ln_1\.",
    ),
)
# Llama-style: Llama, Qwen2/2.5, Qwen3 (q_norm/k_norm live inside self_attn), Mistral, SmolLM. The default.
register_family(
    Family(
        name="llama",
        layer_parts=(
            (r"^input_layernorm\.", "attn"),
            (r"^post_attention_layernorm\.", "mlp"),
            *_GENERIC_PARTS,
        ),
    ),
    aliases=("qwen2", "qwen3", "mistral", "smollm"),
)


def detect_family(canonical_names: list[str]) -> Family:
    """The first family (in DETECTION_ORDER) whose marker appears in any name; Llama-style otherwise."""
    for name in DETECTION_ORDER:
        family = FAMILIES.get(name)
        if family.marker is None:
            continue
        marker = re.compile(family.marker)
        if any(marker.search(n) for n in canonical_names):
            return family
    return FAMILIES.get("llama")
