"""The package pins OpenBLAS's kernel on x86-64, so the same seed gives the same numbers on every machine.

(The closed loop is chaotic in knife-edge episodes: a kernel's different round-off once turned a 0.13 m
episode into a 27.6 m track swap; see ``rl_isac/__init__.py``.)
"""
import json
import os
import platform
import subprocess
import sys

import pytest

import rl_isac

ON_X86_64 = platform.machine().lower() in rl_isac.X86_64_MACHINES
KERNEL_NAMES = pytest.mark.skipif(not ON_X86_64, reason="OpenBLAS names these kernels on x86-64 only")

PROBE = ("import os, json, rl_isac, numpy; from rl_isac.evaluation.harness import blas_kernel; "
         "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'), blas_kernel()]))")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "RL_ISAC_NATIVE_BLAS")}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          timeout=120)


def _probe(code: str = PROBE, **env: str) -> tuple[str | None, str]:
    out = _run(code, **env)
    assert out.returncode == 0, out.stderr
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


@KERNEL_NAMES
def test_importing_the_package_first_runs_numpy_on_the_pinned_kernel():
    variable, kernel = _probe()
    assert variable == rl_isac.OPENBLAS_CORETYPE
    assert kernel == f"openblas:{rl_isac.OPENBLAS_CORETYPE}"


@KERNEL_NAMES
def test_a_users_own_kernel_choice_and_the_opt_out_are_respected():
    assert _probe(OPENBLAS_CORETYPE="Nehalem") == ("Nehalem", "openblas:Nehalem")
    variable, kernel = _probe(RL_ISAC_NATIVE_BLAS="1")
    assert variable is None and kernel.startswith("openblas:")
    assert _probe(RL_ISAC_NATIVE_BLAS="0")[0] == rl_isac.OPENBLAS_CORETYPE  # 0: pinned, not an opt-out


def test_no_pin_off_x86_64_or_once_numpy_is_loaded():
    """On another architecture the variable is left alone; after numpy loaded it would change nothing, so the
    package does not set it (a process that imports numpy first keeps its CPU's kernel)."""
    other_cpu = "import platform; platform.machine = lambda: 'aarch64'; " + PROBE
    assert _probe(other_cpu)[0] is None
    numpy_first = "import numpy; " + PROBE
    assert _probe(numpy_first)[0] is None


def test_a_wrong_opt_out_value_is_an_error_naming_it():
    out = _run("import rl_isac", RL_ISAC_NATIVE_BLAS="yes")
    assert out.returncode != 0 and "RL_ISAC_NATIVE_BLAS='yes'" in out.stderr and "must be 1" in out.stderr
