"""The house's sizes: modules a person reads in one sitting, core functions a reviewer checks.

No module of ``bulkpost`` over 400 lines and no class over 250; no function of the core
(``bulkpost/core``, where the decisions are) above a cyclomatic complexity of 20, as radon
counts it (every branch, loop and boolean operator).
"""

from __future__ import annotations

import ast
from pathlib import Path

from radon.complexity import cc_visit

PACKAGE = Path(__file__).resolve().parents[1] / "bulkpost"
MOST_COMPLEX = 20


def test_no_module_is_too_big() -> None:
    """A module a person can read in one sitting: no module over 400 lines, no class over 250."""
    big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            big.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 250:
                    big.append(f"{path.relative_to(PACKAGE.parent)}: class {node.name}, "
                               f"{size} lines")
    assert big == []


def complex_functions(source: str, limit: int = MOST_COMPLEX) -> list[str]:
    """The functions and methods of ``source`` above ``limit``, with their complexity."""
    found = []
    for block in cc_visit(source):
        for item in [block, *getattr(block, "methods", [])]:
            if item.complexity > limit and not hasattr(item, "methods"):
                found.append(f"{item.fullname} ({item.complexity})")
    return found


def test_no_core_function_is_too_complex() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}: {name}"
             for path in sorted((PACKAGE / "core").rglob("*.py"))
             for name in complex_functions(path.read_text(encoding="utf-8"))]
    assert found == []


def test_the_complexity_check_counts_branches_and_conditions() -> None:
    branches = "".join(f"    if x == {n} and y:\n        return {n}\n" for n in range(11))
    source = f"def decide(x, y):\n{branches}    return -1\n"
    assert complex_functions(source) == ["decide (23)"]
    assert complex_functions(source, limit=23) == []
