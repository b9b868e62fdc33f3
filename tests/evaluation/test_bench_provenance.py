"""A benchmark JSON says where it ran: timings of two machines differ by several times for the same code."""

from __future__ import annotations

import json

from rl_isac.cli import _bench_provenance, main
from rl_isac.evaluation.harness import blas_kernel, git_revision


def test_bench_provenance_names_revision_kernel_and_machine():
    p = _bench_provenance()
    assert p["git_revision"] == git_revision() and p["blas_kernel"] == blas_kernel()
    assert p["cpu"] and p["cores"] >= 1 and p["utc"].endswith("Z")


def test_the_ppo_config_error_writes_no_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--ppo-config", "x.yaml", "--json", str(out)]) != 0
    assert not out.exists()
    json.dumps(_bench_provenance())  # serialisable as written
