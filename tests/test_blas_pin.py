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

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the pin applies to x86-64 OpenBLAS only")

PROBE = ("import os, json, rl_isac, numpy; from rl_isac.evaluation.harness import blas_kernel; "
         "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'), blas_kernel()]))")


def _probe(**env: str) -> tuple[str | None, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "RL_ISAC_NATIVE_BLAS")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_package_first_runs_numpy_on_the_pinned_kernel():
    variable, kernel = _probe()
    assert variable == rl_isac.OPENBLAS_CORETYPE
    assert kernel == f"openblas:{rl_isac.OPENBLAS_CORETYPE}"


def test_a_users_own_kernel_choice_and_the_opt_out_are_respected():
    assert _probe(OPENBLAS_CORETYPE="Nehalem") == ("Nehalem", "openblas:Nehalem")
    variable, kernel = _probe(RL_ISAC_NATIVE_BLAS="1")
    assert variable is None and kernel.startswith("openblas:")
