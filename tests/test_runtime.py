"""The helper thread that runs a second computation beside the caller's."""

import subprocess
import sys
import textwrap
import threading

from fhmm_ppl.runtime import run_beside


def test_run_beside_runs_the_second_callable_on_the_helper_thread():
    here = threading.current_thread().name
    first, second = run_beside(lambda: threading.current_thread().name, lambda: threading.current_thread().name)
    assert first == here and second.startswith("fhmm-helper")


def test_work_handed_to_the_helper_that_hands_work_on_does_not_wait_for_itself():
    # In a fresh process: if the helper waited for itself, its one worker would hang for good.
    code = textwrap.dedent("""
        from fhmm_ppl.runtime import run_beside
        print(run_beside(lambda: 1, lambda: run_beside(lambda: 2, lambda: 3)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, (2, 3))"
