"""The child-process runner with real child processes: progress, crash, cancel of a process tree."""

from __future__ import annotations

import sys
import textwrap
import time

import psutil
import pytest
from MambaMIMSegmenterLib.runner import EngineCancelled, EngineError, ProcessRunner


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_progress_events_arrive_while_the_child_runs():
    runner = ProcessRunner(
        _script("""
        import json, sys, time
        for i in range(3):
            event = {"stage": "work", "fraction": i / 3, "eta_s": 1, "message": f"step {i}"}
            print(json.dumps(event), flush=True)
            time.sleep(0.3)
        print("noise on stdout", flush=True)
        print("a warning", file=sys.stderr, flush=True)
        print(json.dumps({"stage": "done", "fraction": 1, "eta_s": 0, "message": "", "outputs": {"x": "y"}}))
    """)
    )
    runner.start()
    seen_while_running = []
    while runner.returncode is None:
        events = runner.poll()
        if runner.returncode is None:
            seen_while_running += events
        time.sleep(0.02)
    assert seen_while_running, "no progress was delivered before the child exited"
    assert [e.message for e in runner.events if e.stage == "work"] == ["step 0", "step 1", "step 2"]
    assert runner.result().outputs == {"x": "y"}
    assert "noise on stdout" in runner.log and "a warning" in runner.log


def test_crash_reports_the_end_of_stderr():
    runner = ProcessRunner(
        _script("""
        import json
        print(json.dumps({"stage": "load", "fraction": 0.1}), flush=True)
        raise RuntimeError("CUDA out of memory (simulated)")
    """)
    )
    runner.start()
    assert runner.wait(timeout=30) == 1
    with pytest.raises(EngineError, match=r"(?s)unexpectedly.*Traceback.*\n  File.*CUDA out of memory"):
        runner.result()


def test_engine_error_line_is_the_message():
    runner = ProcessRunner(
        _script("""
        import json, sys
        print(json.dumps({"stage": "error", "fraction": 0, "message": "input.nrrd is 2-D"}))
        sys.exit(1)
    """)
    )
    runner.start()
    runner.wait(timeout=30)
    with pytest.raises(EngineError, match=r"^input\.nrrd is 2-D$"):
        runner.result()


def test_missing_executable_is_a_clear_error():
    with pytest.raises(EngineError, match="could not start the engine"):
        ProcessRunner(["/nonexistent/PythonSlicer", "-m", "mambamim"]).start()


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cancel_kills_the_whole_process_tree():
    runner = ProcessRunner(
        _script("""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(json.dumps({"stage": "work", "fraction": 0.1, "message": str(child.pid)}), flush=True)
        time.sleep(120)
    """)
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not runner.events and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    grandchild = int(runner.events[0].message)
    assert not _dead(grandchild)
    started = time.monotonic()
    runner.cancel()
    assert time.monotonic() - started < 15
    assert runner.returncode is not None
    assert _dead(runner.process.pid) and _dead(grandchild)
    with pytest.raises(EngineCancelled):
        runner.result()
    runner.cancel()  # idempotent
