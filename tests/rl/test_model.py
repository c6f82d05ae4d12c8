"""Policy loading: chat template really applied, tokenizer special tokens, tiny policies, LoRA, cache atomicity."""

from __future__ import annotations

import json

import pytest
import torch

from mgs.rl import model as M
from mgs.rl.model import LoraSpec, build_tiny_policy, encode_prompts


def test_smollm2_tokenizer_special_tokens(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert tok.convert_ids_to_tokens([tok.eos_token_id, tok.pad_token_id]) == ["<|im_end|>", "<|endoftext|>"]
    assert tok.padding_side == "left"
    assert "<|im_start|>" in tok.chat_template


def test_encode_prompts_applies_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    [ids] = encode_prompts(tok, [[{"role": "user", "content": "What is 2+2?"}]])
    [ids_sys] = encode_prompts(tok, [[{"role": "user", "content": "What is 2+2?"}]], system_prompt="Be brief.")
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == im_start and ids.count(im_start) == 3  # default system turn, user turn, assistant header
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert ids[-len(header):] == header
    assert tok.decode(ids).endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(ids_sys).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    [no_gen] = encode_prompts(tok, [[{"role": "user", "content": "What is 2+2?"}]], add_generation_prompt=False)
    assert ids[: len(no_gen)] == no_gen and len(no_gen) < len(ids)


def test_encode_prompts_rejects_bad_messages(smollm2_tokenizer):
    with pytest.raises(ValueError, match="role"):
        encode_prompts(smollm2_tokenizer, [[{"content": "no role"}]])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiny_policy_matches_tokenizer_and_is_seeded(family, smollm2_tokenizer):
    a = build_tiny_policy(family, seed=3, tokenizer=smollm2_tokenizer)
    b = build_tiny_policy(family, seed=3, tokenizer=smollm2_tokenizer)
    c = build_tiny_policy(family, seed=4, tokenizer=smollm2_tokenizer)
    assert a.model.config.vocab_size == len(smollm2_tokenizer)
    assert a.model.config.num_hidden_layers == 2 and a.model.config.hidden_size == 32
    sa, sc = a.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in sa.items())
    assert any(not torch.equal(v, sc[k]) for k, v in sa.items())
    assert a.model.generation_config.eos_token_id == smollm2_tokenizer.eos_token_id
    assert "tiny random" in a.note and not a.is_peft


def test_tiny_policy_config_overrides_and_errors(smollm2_tokenizer):
    p = build_tiny_policy("llama", tokenizer=smollm2_tokenizer, num_hidden_layers=3, hidden_size=64)
    assert p.model.config.num_hidden_layers == 3 and p.model.config.hidden_size == 64
    with pytest.raises(ValueError, match="choose from"):
        build_tiny_policy("gpt5", tokenizer=smollm2_tokenizer)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        build_tiny_policy("llama", tokenizer=smollm2_tokenizer, vocab_size=100)
    with pytest.raises(ValueError, match="choose from"):
        build_tiny_policy("llama", tokenizer=smollm2_tokenizer, dtype="float8")


def test_lora_wraps_with_full_dotted_names_and_only_adapters_train(smollm2_tokenizer):
    p = build_tiny_policy("llama", tokenizer=smollm2_tokenizer, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    assert p.is_peft and "LoRA r=4" in p.note
    trainable = [n for n, t in p.model.named_parameters() if t.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert any(n.endswith("model.layers.1.self_attn.v_proj.lora_B.default.weight") for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    with pytest.raises(ValueError, match="unknown LoRA keys"):
        build_tiny_policy("llama", tokenizer=smollm2_tokenizer, lora={"rank": 4})
    with pytest.raises(ValueError, match="rank"):
        LoraSpec(r=0)


def test_load_policy_from_saved_dir_round_trips(tmp_path, tiny_policy):
    tiny_policy.model.save_pretrained(tmp_path)
    tiny_policy.tokenizer.save_pretrained(tmp_path)
    loaded = M.load_policy(str(tmp_path), dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    ref = tiny_policy.model.state_dict()
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, ref[k].to(torch.bfloat16)), k
    assert loaded.tokenizer.eos_token == "<|im_end|>" and loaded.tokenizer.padding_side == "left"


def test_load_policy_unknown_name_says_what_to_do():
    with pytest.raises(FileNotFoundError, match="smollm2-135m-instruct"):
        M.load_policy("no-such-model")


def test_missing_chat_template_is_refused(smollm2_tokenizer):
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        M.prepare_tokenizer(tok)


def test_atomic_cache_survives_a_killed_build_and_rebuilds_on_new_source(tmp_path):
    target = tmp_path / "models" / "x"
    calls = []

    def crash(out):
        (out / "half.bin").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        M._atomic_cache(target, {"size": 1}, crash)
    assert not target.exists() and list((tmp_path / "models").iterdir()) == []

    def build(out):
        calls.append(1)
        (out / "w.bin").write_text("ok")

    assert M._atomic_cache(target, {"size": 1}, build) == target
    M._atomic_cache(target, {"size": 1}, build)
    assert len(calls) == 1 and json.loads((target / "mgs_source.json").read_text()) == {"size": 1}
    M._atomic_cache(target, {"size": 2}, build)
    assert len(calls) == 2


def test_atomic_cache_keeps_a_concurrent_finished_build(tmp_path):
    """Two ranks converting at once: the one that finishes second must not delete the first one's cache."""
    target = tmp_path / "models" / "x"

    def build_while_other_rank_finishes(out):
        (out / "w.bin").write_text("mine")
        target.mkdir(parents=True)
        (target / "w.bin").write_text("theirs")
        (target / "mgs_source.json").write_text(json.dumps({"size": 1}))

    assert M._atomic_cache(target, {"size": 1}, build_while_other_rank_finishes) == target
    assert (target / "w.bin").read_text() == "theirs"
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["x"]  # our temp dir is gone


def test_gguf_alias_honours_env_var(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"x")
    monkeypatch.setenv("MGS_POLICY_GGUF", str(fake))
    src = M.POLICY_ALIASES.get("smollm2-135m-instruct")()
    assert (src.directory, src.filename) == (tmp_path, "model.gguf")
    monkeypatch.setenv("MGS_POLICY_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="MGS_POLICY_GGUF"):
        M.POLICY_ALIASES.get("smollm2-135m-instruct")()


@pytest.mark.slow
def test_real_smollm2_alias_loads_trains_and_answers():
    """The shipped GGUF: dequantised, detached from its quantizer (trainable), cached, chat-ready. First run
    converts the GGUF (~40 s), later runs load the cached safetensors (~1 s)."""
    from mgs.rl.logprobs import build_batch, token_logprobs
    from mgs.rl.rollout import HFGenerateBackend

    policy = M.load_policy("smollm2-135m-instruct")
    assert policy.note == "SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float"
    assert getattr(policy.model, "hf_quantizer", None) is None or not policy.model.is_quantized
    assert next(policy.model.parameters()).dtype == torch.float32
    assert (M.cache_root() / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()
    tok = policy.tokenizer
    prompts = encode_prompts(tok, [[{"role": "user", "content": "What is 2+2? Answer with the number."}]])
    [c] = HFGenerateBackend(policy.model, tok).generate(prompts, num_samples=1, max_new_tokens=24, temperature=0.0, seed=0)
    assert c.finished and c.completion_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>") and "4" in c.text
    batch = build_batch([c], pad_token_id=tok.pad_token_id)
    logp, _ = token_logprobs(policy.model, batch.input_ids, batch.attention_mask, start=batch.start)
    assert logp.mean() > -1.0  # greedy tokens are likely under the model
    logp.sum().backward()
    assert policy.model.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0
