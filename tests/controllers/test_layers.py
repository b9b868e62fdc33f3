"""Layering: a lower layer never imports a higher one (checked on the source, imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import rl_isac

ROOT = Path(rl_isac.__file__).resolve().parent

# package -> packages it must never import
FORBIDDEN = {
    "physics": ("rl_isac.association", "rl_isac.tracking", "rl_isac.controllers", "rl_isac.training",
                "rl_isac.evaluation", "rl_isac.rllib"),
    "association": ("rl_isac.tracking", "rl_isac.controllers", "rl_isac.training", "rl_isac.evaluation",
                    "rl_isac.rllib"),
    "tracking": ("rl_isac.controllers", "rl_isac.training", "rl_isac.evaluation", "rl_isac.rllib"),
    "controllers": ("rl_isac.training", "rl_isac.evaluation"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def test_no_lower_layer_imports_a_higher_one():
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in _imports(path):
                if module.startswith(forbidden):
                    bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from rl_isac.training.l2o import load_l2o\n")
    assert _imports(probe) == [(2, "rl_isac.training.l2o")]
