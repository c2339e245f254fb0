"""One asset at a time in a process of its own, under a wall-clock and a memory limit.

An untrusted asset can hang a native library (no Python signal reaches it), crash it
(segfault), or allocate until the kernel's OOM killer steps in. Run in the Ray worker itself,
any of these would take the worker down and Ray would retry the asset, again and again, while
the ordered shard writer waits behind it. So the Ray worker only supervises: it hands the asset
to a child interpreter (`python -m pipelines.isolate`), polls it, and kills it when it runs past
`limits.timeout_s` or its resident memory passes `limits.memory_gb` (0 = the Ray reservation,
`limits.memory_per_asset_gb`). A killed or crashed child becomes a reject row of stage ``worker``:

- ``timeout``: no result within limits.timeout_s; the process was killed.
- ``out_of_memory``: resident memory above the limit; the process was killed.
- ``worker_died``: the process exited without a result (a signal such as SIGSEGV or SIGKILL from
  the OOM killer, or an exit status); the detail names it.

The child is kept for the next asset when it finished cleanly (the first asset in a process pays
~4 s of lazy imports, EGL and compiled-kernel loading; later ones nothing), and replaced after a
kill or a crash. It dies with its supervisor (PR_SET_PDEATHSIG), so a Ray worker lost with its
node leaves no orphan burning CPU. Peak memory is measured per asset (VmHWM, reset before each).

Fault injection for tests: $SHAPEGEN4D_ASSET_FAULTS="<uid>=<fault>,..." in the job driver's environment
(sent with each request) makes the child misbehave
on that uid: `hang` (sleeps forever), `kill` (SIGKILLs itself), `segv` (a real segmentation
fault), `kill-ray` (SIGKILLs its supervisor, the Ray worker), `kill-ray-once:<marker file>`
(the same, once: the marker file records that it happened).
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from pipelines.records import AssetResult, Reject

FAULTS_ENV = "SHAPEGEN4D_ASSET_FAULTS"
_POLL_S = 0.1
_REPO = str(Path(__file__).resolve().parents[1])


@dataclass
class _Child:
    proc: subprocess.Popen
    to_child: Connection
    from_child: Connection


class Supervisor:
    """Runs assets in one child process at a time; one supervisor per Ray worker process."""

    def __init__(self) -> None:
        self._child: _Child | None = None

    def run(self, uid: str, request: tuple, timeout_s: float, memory_bytes: int) -> AssetResult:
        """`request` = (AssetRef as dict, DatasetConfig, config digest, fault spec), sent to the child
        pickled; the fault spec is `faults()` of the job's driver ("" = none)."""
        child = self._child or self._start()
        self._child = None  # handed back below only when the child finished cleanly
        t0 = time.monotonic()
        try:
            child.to_child.send_bytes(pickle.dumps(request, protocol=5))
        except OSError:  # BrokenPipe: the idle child died between assets; start a fresh one
            _kill(child)
            child = self._start()
            child.to_child.send_bytes(pickle.dumps(request, protocol=5))
        peak = 0
        while True:
            rss = _rss_bytes(child.proc.pid)
            peak = max(peak, rss)
            if memory_bytes and rss > memory_bytes:
                _kill(child)
                return _reject(uid, "out_of_memory", f"resident memory {rss / 2**30:.2f} GiB passed the limit of "
                               f"{memory_bytes / 2**30:.2f} GiB (limits.memory_gb, default limits.memory_per_asset_gb); "
                               "the asset process was killed", time.monotonic() - t0, peak)
            if time.monotonic() - t0 > timeout_s:
                _kill(child)
                return _reject(uid, "timeout", f"no result after {timeout_s:g} s (limits.timeout_s); the asset process "
                               "was killed", time.monotonic() - t0, peak)
            try:
                if child.from_child.poll(_POLL_S):
                    result: AssetResult = pickle.loads(child.from_child.recv_bytes())
                    result.wall_s = time.monotonic() - t0
                    # Memory an asset leaves behind in the allocator would count against the next
                    # one: a process that holds more than half the limit is replaced.
                    if memory_bytes and _rss_bytes(child.proc.pid) > memory_bytes // 2:
                        _kill(child)
                    else:
                        self._child = child
                    return result
            except (EOFError, OSError):
                pass  # the child is gone: its exit status says how, below
            if child.proc.poll() is not None:
                return _died(uid, child.proc.returncode, time.monotonic() - t0)

    def _start(self) -> _Child:
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO, env.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.isolate", str(req_r), str(res_w), str(os.getpid())],
            pass_fds=(req_r, res_w), env=env, stdin=subprocess.DEVNULL, close_fds=True,
        )
        os.close(req_r)
        os.close(res_w)
        return _Child(proc, Connection(req_w, readable=False), Connection(res_r, writable=False))

    def close(self) -> None:
        if self._child is not None:
            _kill(self._child)
            self._child = None


def _kill(child: _Child) -> None:
    if child.proc.poll() is None:
        child.proc.kill()
    child.proc.wait()
    child.to_child.close()
    child.from_child.close()


def _reject(uid: str, reason: str, detail: str, wall_s: float, peak_bytes: int = 0) -> AssetResult:
    result = AssetResult(uid=uid, rejects=[Reject(uid, "", "worker", reason, detail)])
    result.wall_s, result.peak_rss_mb = wall_s, peak_bytes / 2**20
    return result


def _died(uid: str, returncode: int, wall_s: float) -> AssetResult:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"was killed by {name}"
        if -returncode == signal.SIGKILL:
            how += " (the kernel's OOM killer, or an operator)"
        elif -returncode in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE):
            how += " (a crash in native code)"
    else:
        how = f"exited with status {returncode}"
    return _reject(uid, "worker_died", f"the asset process {how} before returning a result", wall_s)


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0  # gone, or not Linux: the exit status check handles it


# ---------------------------------------------------------------- the child


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its supervisor dies (Linux), closing the race with a pid check."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _peak_rss_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), in MiB; 0 when unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def faults() -> str:
    """The fault spec of this process's environment. The driver reads it and sends it with each
    request: Ray workers (and so asset processes) may have started before it was set."""
    return os.environ.get(FAULTS_ENV, "")


def _parse_faults(spec: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in spec.split(",") if "=" in item)


def _inject(fault: str) -> None:
    if fault == "hang":
        while True:
            time.sleep(3600)
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "segv":
        ctypes.string_at(0)
    if fault == "kill-ray":
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)  # PR_SET_PDEATHSIG ends this process
    if fault.startswith("kill-ray-once:"):
        marker = Path(fault.split(":", 1)[1])
        if not marker.exists():
            marker.write_text(str(os.getppid()))
            _inject("kill-ray")


def _serve(req_fd: int, res_fd: int) -> None:
    from pipelines import process, shards, sources

    requests, results = Connection(req_fd, writable=False), Connection(res_fd, readable=False)
    while True:
        try:
            ref_dict, cfg, config_digest, fault_spec = pickle.loads(requests.recv_bytes())
        except EOFError:
            return  # the supervisor closed the pipe: no more assets
        _reset_peak_rss()
        ref = sources.AssetRef(**ref_dict)
        fault = _parse_faults(fault_spec).get(ref.uid)
        if fault:
            _inject(fault)
        result = process.process_asset(ref, cfg, config_digest)
        if result.rows:  # Parquet encoding and compression happen here, not on the job's driver
            t0 = time.process_time()
            result.packed, result.rows = shards.pack(result.rows, process.dims(cfg)), []
            result.cpu_s["pack"] += time.process_time() - t0
        result.cpu_s = dict(result.cpu_s)
        result.peak_rss_mb = _peak_rss_mb()
        results.send_bytes(pickle.dumps(result, protocol=5))


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[3]))
    _serve(int(sys.argv[1]), int(sys.argv[2]))
