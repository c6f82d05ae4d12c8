"""Parallel math verification: a pool of worker processes gives the sequential scores, in order, and keeps the
per-worker deadline/kill/restart; workers start lazily and close."""

from __future__ import annotations

import os
import threading
import time

import pytest

from mgs.domains.base import Sample
from mgs.domains.math import MathDomain
from mgs.domains.math import answer as answer_mod
from mgs.domains.math.verifier import VerifierPool, default_pool_size

RESPONSES = [
    "#### 42", "so \\boxed{41}", "The answer is 1,000.", "\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{1/3}",
    "\\boxed{\\sqrt{8}}", "\\boxed{2\\sqrt{2}}", "\\boxed{x=5}", "\\boxed{50\\%}", "\\boxed{\\$18.00}",
    "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "no answer here", "", "\\boxed{x^2+}}{{", "\\boxed{\\frac{1}{0}}",
    "数学 \\boxed{答案}", "\\boxed{" + "1+" * 200 + "1}", "\\boxed{−3}", "#### 18\nthen 5",
]
GOLDS = ["42", "42", "1000", "0.5", "1/2", "0.333", "2\\sqrt{2}", "\\sqrt{8}", "5", "0.5", "18",
         "\\left( 3, \\frac{\\pi}{2} \\right)", "7", "7", "3", "1", "3", "1", "-3", "18"]


def _samples(golds):
    return [Sample(f"u{i}", "math", (), g) for i, g in enumerate(golds)]


def test_parallel_scores_equal_sequential_in_order():
    golds, responses = GOLDS * 3, RESPONSES * 3
    sequential = MathDomain(verify_workers=1, fast_integer_check=False).score(_samples(golds), responses)
    parallel = MathDomain(verify_workers=3).score(_samples(golds), responses)
    one_by_one = [MathDomain().score_one(g, r) for g, r in zip(golds, responses)]
    assert [(r.score, r.parts, r.info) for r in parallel] == [(r.score, r.parts, r.info) for r in sequential]
    assert [(r.score, r.parts, r.info) for r in parallel] == [(r.score, r.parts, r.info) for r in one_by_one]
    # the batch has both verdicts and an unscorable pair (reference values, not just agreement)
    assert [r.score for r in parallel[:20]] == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert answer_mod.VERIFIER.num_alive >= 2  # the batch really used several worker processes


def test_a_runaway_check_is_killed_without_touching_the_others():
    domain = MathDomain(verify_workers=3, timeout_s=1.0)
    runaway = "\\boxed{10^{10^{10^{10}}}}"
    responses = [runaway] + ["\\boxed{\\frac{6}{4}}"] * 4 + [runaway] + ["\\boxed{\\frac{7}{4}}"] * 4
    restarts = answer_mod.VERIFIER.restarts
    t0 = time.perf_counter()
    results = domain.score(_samples(["3"] * 10), responses)
    assert time.perf_counter() - t0 < 8.0
    for i in (0, 5):  # the same runaway pair twice in a batch is checked (and killed) once
        assert results[i].score is None and "did not finish within 1 s" in results[i].info["error"]
    results = domain.score(_samples(["3"] + ["1.5"] * 8), [runaway] + ["\\boxed{\\frac{6}{4}}"] * 8)
    assert results[0].score is None
    assert [r.score for r in results[1:]] == [1.0] * 8
    assert answer_mod.VERIFIER.restarts == restarts + 2
    assert domain.score(_samples(["3"]), ["\\boxed{3.0}"])[0].score == 1.0  # the killed worker restarts


def test_pool_starts_lazily_caps_workers_and_closes():
    pool = VerifierPool(max_workers=2)
    assert pool.num_alive == 0  # nothing started before the first check
    for _ in range(3):  # a sequential caller keeps reusing one warm worker
        assert pool.check("1/2", "0.5", 10.0) == {"correct": True}
    assert pool.num_alive == 1
    replies: list[dict] = []
    threads = [threading.Thread(target=lambda: replies.append(pool.check("2", "\\frac{4}{2}", 10.0)))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert replies == [{"correct": True}] * 5
    assert pool.num_alive == 2  # 5 threads, but never more than max_workers processes
    pool.close()
    assert pool.num_alive == 0
    assert pool.check("3", "3", 10.0) == {"correct": True}  # a closed pool starts again on demand
    assert pool.warm() == 2  # warm starts the rest up to max_workers, no more
    assert pool.warm(5) == 2
    pool.close()


def test_sizes_are_validated():
    assert 1 <= default_pool_size() <= 8
    with pytest.raises(ValueError, match="verify_workers"):
        MathDomain(verify_workers=0)
    with pytest.raises(ValueError, match="max_workers"):
        VerifierPool(max_workers=0)
    with pytest.raises(ValueError, match="workers"):
        answer_mod.check_answers(["1"], ["1"], workers=0)
    with pytest.raises(ValueError, match="one gold per answer"):
        answer_mod.check_answers(["1"], [], workers=2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_workers():
    pool = VerifierPool(max_workers=2)
    pool.warm(1)
    parent_pid = pool._workers[0]._proc.pid
    pid = os.fork()
    if pid == 0:  # child: the parent's worker is not ours; a check starts a fresh one, and closing kills only it
        ok = pool.num_alive == 0 and pool.check("1/2", "0.5", 10.0) == {"correct": True}
        ok = ok and pool._workers[0]._proc.pid != parent_pid
        pool.close()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert pool.num_alive == 1 and pool.check("3", "3.0", 10.0) == {"correct": True}  # the parent's still works
    pool.close()
