"""Diagnostics read back what surgery computed: cosines / conflicts per group equal those computed directly from
the saved domain gradients, and the layer x module-type matrix counts conflicts correctly."""

from __future__ import annotations

import math

import pytest
import torch

from fixture_run import write_fixture_run
from mgs.diagnostics import RunDir
from mgs.diagnostics.conflict import cell_of, conflict_matrix, conflict_summary, group_rows, whole_model
from mgs.surgery import partition


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("granularity", ["module", "tensor"])
def test_group_cosines_equal_direct_cosines_of_saved_grads(tmp_path, granularity):
    run = RunDir(write_fixture_run(tmp_path / granularity, steps=4, granularity=granularity))
    rows = group_rows(run)
    assert run.grad_steps() == [1, 2, 3, 4]
    for step in run.grad_steps():
        grads = run.grads(step)
        names = list(grads["math"])
        groups = partition(names, granularity)
        for group, members in groups.items():
            a = torch.cat([grads["chat"][n].flatten() for n in members])
            b = torch.cat([grads["math"][n].flatten() for n in members])
            (row,) = [r for r in rows if r.step == step and r.group == group]
            assert row.pair == "chat__math"
            assert row.cos == pytest.approx(_cos(a, b), abs=1e-6)  # surgery accumulates float32 grads in float32
            assert row.conflict == (float(a.double() @ b.double()) < 0)
            assert row.norm_ratio == pytest.approx(float(a.double().norm() / b.double().norm()), rel=1e-6)
        # whole model: the metrics' cosine equals the cosine of the concatenated gradients
        a = torch.cat([g.flatten() for g in grads["chat"].values()])
        b = torch.cat([g.flatten() for g in grads["math"].values()])
        series = whole_model(run)["chat__math"]
        assert series.cos[series.steps.index(step)] == pytest.approx(_cos(a, b), abs=1e-6)  # surgery accumulates float32 grads in float32


def test_conflict_matrix_and_summary_count_by_hand(tmp_path):
    run = RunDir(write_fixture_run(tmp_path / "r", steps=6))
    rows = group_rows(run)
    m = conflict_matrix(run, "chat__math", rows)
    assert m.layers == [0, 1] and m.parts == ["attn", "mlp"]
    for i, layer in enumerate(m.layers):
        for j, part in enumerate(m.parts):
            events = [r.conflict for r in rows if r.group == f"layers.{layer}.{part}"]
            assert m.counts[i][j] == 6
            assert m.rate[i][j] == pytest.approx(sum(events) / len(events))
    # the planted pattern: attention agrees (rate 0), MLPs conflict on the 4 of 6 steps where they lean against
    assert all(m.rate[i][0] == 0 for i in range(2))
    assert all(m.rate[i][1] == pytest.approx(4 / 6) for i in range(2))
    assert set(m.outside) == {"embed", "head"}
    s = conflict_summary(run)["chat__math"]
    cos = whole_model(run)["chat__math"].cos
    assert s["cos_neg_frac"] == pytest.approx(sum(c < 0 for c in cos) / 6)
    assert 0 < s["cos_neg_frac"] < 1


def test_tensor_groups_land_in_their_module_cells():
    cells = cell_of(["model.layers.1.post_attention_layernorm.weight", "model.layers.0.self_attn.q_proj.weight",
                     "model.embed_tokens.weight", "model.norm.weight", "layers.3.mlp", "head"])
    assert cells["model.layers.1.post_attention_layernorm.weight"] == ("layer 1", "mlp")
    assert cells["model.layers.0.self_attn.q_proj.weight"] == ("layer 0", "attn")
    assert cells["model.embed_tokens.weight"] == ("embed", "all")
    assert cells["model.norm.weight"] == ("head", "all")
    assert cells["layers.3.mlp"] == ("layer 3", "mlp")


def test_packed_surgery_reads_the_same_as_the_step_files(tmp_path):
    """`pack_surgery` (what an experiment keeps in the repository) loses nothing: a run with only
    surgery.jsonl.gz gives the same steps, objects and conflict rows as the one with surgery/step_*.json."""
    import shutil

    from mgs.diagnostics.rundir import SURGERY_PACK, pack_surgery

    loose = RunDir(write_fixture_run(tmp_path / "loose", steps=3, granularity="tensor"))
    packed_dir = tmp_path / "packed"
    shutil.copytree(loose.path, packed_dir)
    assert pack_surgery(packed_dir / "surgery", packed_dir / SURGERY_PACK) == 3
    shutil.rmtree(packed_dir / "surgery")
    packed = RunDir(packed_dir)
    assert packed.surgery_steps() == loose.surgery_steps() == [1, 2, 3]
    assert list(packed.iter_surgery()) == list(loose.iter_surgery())
    assert packed.surgery(2) == loose.surgery(2)
    assert group_rows(packed) == group_rows(loose)
    with pytest.raises(KeyError, match="no step 9"):
        packed.surgery(9)
