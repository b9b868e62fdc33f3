"""rl_isac: multi-target tracking in cooperative mmWave ISAC networks (see README.md).

Importing the package pins numpy's OpenBLAS kernel, on x86-64, to :data:`OPENBLAS_CORETYPE` (``Haswell``,
AVX2), so that the same config and seed give the same numbers on every x86-64 machine, not only on one.

Why: the closed loop (estimator -> tracker -> association -> beams -> next echoes) is chaotic in its
knife-edge episodes (two targets spawned or crossing a resolution cell apart), and OpenBLAS picks its kernel
by CPU (``Haswell`` on AVX2 machines, ``SkylakeX``/``Cooperlake`` on AVX-512 ones), whose round-off differs
in the last bits. Measured: evaluation seed 0, ``ekf-convex``, I = 4, 50 episodes, the code of ad2d0a0: on an
AVX-512 machine with its native kernel 46 of the 50 episode RMSEs differed from those of the AVX2 machine
that made ``results/full`` (in the third decimal), and episode 22 swapped two tracks (27.6 m instead of
0.126 m: the cell's mean went from 0.098 to 3.9 m); with ``OPENBLAS_CORETYPE=Haswell`` all 50 were equal
bit for bit. torch's float32 kernels still differ by about 1e-7 m between CPUs (no setting of ATen, MKL or
oneDNN removed that), which moved no episode there.

The pin only takes effect where numpy is not imported yet (OpenBLAS reads the variable when it loads) and
the variable is unset; set ``OPENBLAS_CORETYPE`` yourself to choose another kernel, or
``RL_ISAC_NATIVE_BLAS=1`` to keep the CPU's own (``0`` or unset: pinned; any other value is an error). Ray
workers started by this process inherit it.
:func:`rl_isac.evaluation.harness.blas_kernel` says which kernel a process runs; every evaluation JSON
records it.
"""

import os as _os
import platform as _platform
import sys as _sys

OPENBLAS_CORETYPE = "Haswell"
"""The OpenBLAS kernel the package pins on x86-64 (the AVX2 one: every x86-64 CPU of the last decade runs it)."""

X86_64_MACHINES = ("x86_64", "amd64")
"""``platform.machine()`` names (lower case) on which the pin applies."""

_native = _os.environ.get("RL_ISAC_NATIVE_BLAS", "")
if _native not in ("", "0", "1"):
    raise ValueError(f"RL_ISAC_NATIVE_BLAS={_native!r}: must be 1 (keep the CPU's own BLAS kernel), 0 or unset "
                     f"(pin OpenBLAS to {OPENBLAS_CORETYPE} on x86-64)")
if "numpy" not in _sys.modules and _platform.machine().lower() in X86_64_MACHINES and _native != "1":
    _os.environ.setdefault("OPENBLAS_CORETYPE", OPENBLAS_CORETYPE)
