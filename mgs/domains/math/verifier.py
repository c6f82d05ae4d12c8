"""The math-verify worker processes behind the math reward: one client per worker (`MathVerifier`) and a pool of
them (`VerifierPool`) so that a batch of checks runs concurrently.

Why processes (see `_verify_worker.py`): a runaway sympy computation holds the GIL inside one C call, so only
killing a process bounds a check; each worker also runs under an address-space limit.
Why a pool: one check costs ~1-25 ms of sympy; a GRPO step scores hundreds of answers. Each `MathVerifier` serves
one check at a time over its pipe; the pool lends an idle one to each calling thread (starting a new worker while
fewer than `max_workers` exist, else waiting), so N threads keep N workers busy: a thread waiting on its pipe
(`select`) releases the GIL. The per-check deadline, kill and restart stay per worker. Workers start lazily (a
sequential caller only ever starts one: idle workers are lent last-in first-out) and are killed at exit.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["MathVerifier", "VerifierPool", "default_pool_size"]

MAX_DEFAULT_WORKERS = 8


def default_pool_size() -> int:
    """min(8, usable CPUs / processes of this job on the host (torchrun's LOCAL_WORLD_SIZE)), at least 1: one
    training rank per GPU each gets its share of the host's cores for its verifier workers."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_ranks = 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // local_ranks))


class MathVerifier:
    """Client of one `_verify_worker` child process; thread-safe; restarts the child after a kill or a crash."""

    def __init__(self, max_memory_mb: int = 2048, start_timeout_s: float = 60.0) -> None:
        self.max_memory_mb, self.start_timeout_s = max_memory_mb, start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = -1
        self.restarts = 0

    @property
    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and self._owner_pid == os.getpid() and proc.poll() is None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[3])  # so the child imports this same `mgs`
        env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
        proc = subprocess.Popen(
            [sys.executable, "-m", "mgs.domains.math._verify_worker", str(self.max_memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        if self._read(proc, self.start_timeout_s) != {"ready": True}:
            self._kill(proc)
            raise RuntimeError(f"the math-verify worker did not start within {self.start_timeout_s:g} s")
        self._owner_pid = os.getpid()
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen, timeout_s: float) -> dict | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = proc.stdout.readline()
        return json.loads(line) if line else None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._owner_pid == os.getpid():
                self._kill(self._proc)
            self._proc = None

    def check(self, gold: str, answer: str, timeout_s: float) -> dict:
        """The worker's reply ({"correct"} | {"gold_error"} | {"error"}); raises TimeoutError/RuntimeError."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or self._owner_pid != os.getpid():
                self._proc = self._start()  # first call, after a kill/crash, or in a forked child process
            proc = self._proc
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps({"gold": gold, "answer": answer}) + "\n")
                proc.stdin.flush()
                reply = self._read(proc, timeout_s)
            except (OSError, ValueError) as e:
                reply, why = None, f"worker pipe failed: {e}"
            else:
                why = f"verification did not finish within {timeout_s:g} s"
            if reply is None:
                self._kill(proc)
                self._proc = None
                self.restarts += 1
                raise TimeoutError(why)
            return reply


class VerifierPool:
    """Up to `max_workers` `MathVerifier`s shared by all threads; `check` has `MathVerifier.check`'s contract.
    `max_workers` None: `default_pool_size()`. `reserve(n)` raises the cap for a caller that runs n threads."""

    def __init__(self, max_workers: int | None = None, max_memory_mb: int = 2048) -> None:
        if max_workers is not None and int(max_workers) < 1:
            raise ValueError(f"max_workers must be >= 1 (or None for the default), got {max_workers}")
        self.max_workers = default_pool_size() if max_workers is None else int(max_workers)
        self.max_memory_mb = max_memory_mb
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        """Fresh state: at creation, and in a forked child (the parent's workers and locks are not the child's;
        its `MathVerifier`s would restart their own processes anyway, see `MathVerifier.check`)."""
        self._cond = threading.Condition()
        self._workers: list[MathVerifier] = []
        self._idle: list[MathVerifier] = []

    def reserve(self, n: int) -> None:
        """Allow at least `n` workers (a batch run on n threads)."""
        with self._cond:
            self.max_workers = max(self.max_workers, int(n))

    def _borrow(self) -> MathVerifier:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()  # last in, first out: a sequential caller keeps one warm worker
                if len(self._workers) < self.max_workers:
                    verifier = MathVerifier(self.max_memory_mb)
                    self._workers.append(verifier)
                    return verifier  # its process starts on its first check, outside this lock
                self._cond.wait()

    def _return(self, verifier: MathVerifier) -> None:
        with self._cond:
            if verifier in self._workers:  # not one lent before a fork
                self._idle.append(verifier)
                self._cond.notify()

    def warm(self, n: int | None = None) -> int:
        """Start `n` worker processes now (default and cap: `max_workers`), concurrently, so the first batch
        doesn't pay the ~0.5-2 s start of each; returns how many are running. Raises RuntimeError if one fails."""
        n = self.max_workers if n is None else min(int(n), self.max_workers)
        with self._cond:
            while len(self._workers) < n:
                verifier = MathVerifier(self.max_memory_mb)
                self._workers.append(verifier)
                self._idle.append(verifier)
            cold = [v for v in self._workers[:n] if not v.alive]
        errors: list[BaseException] = []

        def start(verifier: MathVerifier) -> None:
            try:
                verifier.check("1", "1", verifier.start_timeout_s)
            except BaseException as e:  # noqa: BLE001 - reported below, in the caller's thread
                errors.append(e)

        threads = [threading.Thread(target=start, args=(v,), daemon=True) for v in cold]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"{len(errors)} math-verify worker(s) failed to start: {errors[0]}")
        return self.num_alive

    def check(self, gold: str, answer: str, timeout_s: float) -> dict:
        verifier = self._borrow()
        try:
            return verifier.check(gold, answer, timeout_s)
        finally:
            self._return(verifier)

    @property
    def restarts(self) -> int:
        """Workers killed (deadline passed or pipe broken) since the start, over all workers."""
        return sum(v.restarts for v in list(self._workers))

    @property
    def num_alive(self) -> int:
        """Worker processes running now."""
        return sum(v.alive for v in list(self._workers))

    def close(self) -> None:
        """Kill every worker process of this process (idempotent; later checks start fresh ones)."""
        for verifier in list(self._workers):
            verifier.close()
