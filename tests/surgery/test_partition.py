"""Module grouping on parameter names of real (tiny, random) HF models, peft-wrapped ones included."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from mgs.surgery import partition, resolve

TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=64, max_position_embeddings=64)
MODULE_GROUPS = ["embed", "layers.0.attn", "layers.0.mlp", "layers.1.attn", "layers.1.mlp", "head"]


def _names(kind: str, **overrides) -> list[str]:
    from transformers import Gemma2Config, GPT2Config, LlamaConfig, Qwen2Config, Qwen3Config

    configs = {
        "llama": lambda: LlamaConfig(**TINY, **overrides),
        "qwen2": lambda: Qwen2Config(**TINY, **overrides),
        "qwen3": lambda: Qwen3Config(**TINY, head_dim=8, **overrides),
        "gemma2": lambda: Gemma2Config(**TINY, head_dim=8, **overrides),
        "gpt2": lambda: GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=64, n_positions=32, **overrides),
    }
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(configs[kind]())
    return [n for n, _ in model.named_parameters()]


def _group_of(groups, name):
    return next(g for g, members in groups.items() if name in members)


def _check_cover(groups, names):
    flat = [n for members in groups.values() for n in members]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))


# (model, parameter -> expected module group)
PLACEMENTS = {
    "llama": {
        "model.embed_tokens.weight": "embed",
        "model.layers.0.input_layernorm.weight": "layers.0.attn",
        "model.layers.0.self_attn.o_proj.weight": "layers.0.attn",
        "model.layers.0.post_attention_layernorm.weight": "layers.0.mlp",
        "model.layers.1.mlp.down_proj.weight": "layers.1.mlp",
        "model.norm.weight": "head",
        "lm_head.weight": "head",
    },
    "qwen2": {
        "model.layers.1.self_attn.q_proj.bias": "layers.1.attn",
        "model.layers.1.post_attention_layernorm.weight": "layers.1.mlp",
        "model.layers.1.input_layernorm.weight": "layers.1.attn",
    },
    "qwen3": {
        "model.layers.0.self_attn.q_norm.weight": "layers.0.attn",
        "model.layers.0.self_attn.k_norm.weight": "layers.0.attn",
        "model.layers.0.post_attention_layernorm.weight": "layers.0.mlp",
    },
    "gemma2": {
        "model.layers.0.input_layernorm.weight": "layers.0.attn",
        "model.layers.0.post_attention_layernorm.weight": "layers.0.attn",
        "model.layers.0.pre_feedforward_layernorm.weight": "layers.0.mlp",
        "model.layers.0.post_feedforward_layernorm.weight": "layers.0.mlp",
        "model.norm.weight": "head",
        "model.embed_tokens.weight": "embed",
    },
    "gpt2": {
        "transformer.wte.weight": "embed",
        "transformer.wpe.weight": "embed",
        "transformer.h.0.ln_1.weight": "layers.0.attn",
        "transformer.h.0.attn.c_attn.bias": "layers.0.attn",
        "transformer.h.0.ln_2.bias": "layers.0.mlp",
        "transformer.h.1.mlp.c_proj.weight": "layers.1.mlp",
        "transformer.ln_f.weight": "head",
    },
}


@pytest.mark.parametrize("kind", list(PLACEMENTS))
def test_module_groups_of_real_models(kind):
    names = _names(kind)
    groups = partition(names, "module")
    _check_cover(groups, names)
    assert list(groups) == MODULE_GROUPS, kind
    assert groups.unmatched == []
    for name, group in PLACEMENTS[kind].items():
        assert _group_of(groups, name) == group, name
    # Told explicitly, the family gives the same grouping.
    assert partition(names, "module", family=kind) == groups
    blocks = partition(names, "block")
    assert list(blocks) == ["embed", "layers.0", "layers.1", "head"]
    _check_cover(blocks, names)


@pytest.mark.parametrize("kind", ["gemma2", "gpt2", "llama"])
def test_tied_embedding_appears_once_in_embed(kind):
    names = _names(kind, tie_word_embeddings=True)
    groups = partition(names, "module")
    assert not any("lm_head" in n for n in names)
    embed_name = {"gpt2": "transformer.wte.weight"}.get(kind, "model.embed_tokens.weight")
    assert _group_of(groups, embed_name) == "embed"
    assert sum(n == embed_name for members in groups.values() for n in members) == 1


def test_wrong_family_rule_would_misplace_norms():
    """The family table matters: Gemma rules put Llama's MLP input norm in attn."""
    names = _names("llama")
    forced = partition(names, "module", family="gemma2")
    assert _group_of(forced, "model.layers.0.post_attention_layernorm.weight") == "layers.0.attn"
    with pytest.raises(KeyError, match="choose from"):
        partition(names, "module", family="nope")


def test_peft_lora_names_group_with_the_adapted_module():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_config(LlamaConfig(**TINY)),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"], lora_alpha=4),
    )
    names = [n for n, _ in model.named_parameters()]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".lora_A.default." in n for n in trainable) and all(n.startswith("base_model.model.") for n in names)
    for subset in (names, trainable):
        groups = partition(subset, "module")
        _check_cover(groups, subset)
        assert groups.unmatched == []
    groups = partition(trainable, "module")
    assert list(groups) == ["layers.0.attn", "layers.0.mlp", "layers.1.attn", "layers.1.mlp"]
    p = "base_model.model.model.layers.1."
    assert _group_of(groups, p + "self_attn.q_proj.lora_A.default.weight") == "layers.1.attn"
    assert _group_of(groups, p + "mlp.down_proj.lora_B.default.weight") == "layers.1.mlp"
    full = partition(names, "module")
    assert _group_of(full, p + "self_attn.v_proj.base_layer.weight") == "layers.1.attn"
    assert _group_of(full, p + "post_attention_layernorm.weight") == "layers.1.mlp"
    assert list(full) == MODULE_GROUPS


def test_unmatched_parameter_gets_its_own_group_and_is_listed():
    names = _names("llama") + ["model.layers.0.mystery_gate.weight", "model.logit_scale"]
    groups = partition(names, "module")
    assert groups.unmatched == ["model.layers.0.mystery_gate.weight", "model.logit_scale"]
    assert groups["model.logit_scale"] == ["model.logit_scale"]
    grads = {d: {n: torch.ones(2) for n in names} for d in ("a", "b")}
    _, stats = resolve(grads, method="sum")
    assert stats.unmatched == groups.unmatched and stats.to_dict()["unmatched"] == groups.unmatched


def test_second_layer_stack_stays_apart_from_the_decoder():
    names = [f"model.language_model.layers.{i}.self_attn.q_proj.weight" for i in range(3)] + [
        "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight"
    ]
    groups = partition(names, "module")
    assert list(groups) == ["layers.0.attn", "layers.1.attn", "layers.2.attn", "model.vision_tower.encoder.layers.0.attn"]


def test_regex_rules_first_match_wins_and_rest_unmatched():
    names = _names("llama")
    rules = [(r"layers\.(\d+)\.self_attn\.[qk]_proj", r"L\1.qk"), (r"layers\.(\d+)\.", r"L\1.rest")]
    groups = partition(names, "regex", rules=rules)
    assert groups["L0.qk"] == ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"]
    assert "model.layers.0.self_attn.v_proj.weight" in groups["L0.rest"]
    assert groups.unmatched == ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    # With another granularity the rules take precedence and the granularity places the rest.
    mixed = partition(names, "module", rules=rules[:1])
    assert list(mixed)[:3] == ["embed", "L0.qk", "layers.0.attn"] and mixed.unmatched == []
    with pytest.raises(ValueError, match="needs rules"):
        partition(names, "regex")
    with pytest.raises(ValueError, match="does not compile"):
        partition(names, "module", rules=[("(", "x")])


def test_tensor_and_global_granularity():
    names = _names("qwen2")
    assert list(partition(names, "tensor")) == names
    assert partition(names, "global") == {"global": names}
    with pytest.raises(KeyError, match="choose from"):
        partition(names, "layer")


def test_stats_name_the_granularity_and_accept_precomputed_groups():
    names = _names("llama")
    grads = {d: {n: torch.randn(3) for n in names} for d in ("a", "b")}
    _, stats = resolve(grads, granularity="block")
    assert stats.granularity == "block" and stats.family == "llama"
    groups = partition(names, "module", rules=[(r"lm_head", "out")])
    _, stats = resolve(grads, groups=groups)
    assert stats.granularity == "module+rules" and stats.group_names == list(groups) and "out" in groups
    _, stats = resolve(grads, groups={"all": names})
    assert stats.granularity == "custom"
