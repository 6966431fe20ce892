"""Not only Linux: the package imports where ``fcntl`` does not exist (Windows)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_IMPORT_ALL = """
import importlib, sys
sys.modules["fcntl"] = None  # as on Windows: "import fcntl" raises ImportError
for name in sys.argv[1:]:
    importlib.import_module(name)
assert "fcntl" not in sys.modules or sys.modules["fcntl"] is None
print(len(sys.argv) - 1)
"""


def _modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "bulkpost").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_every_module_imports_without_fcntl() -> None:
    names = _modules()
    assert "bulkpost.storage.locking" in names and "bulkpost.cli.main" in names
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL, *names], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(names))]
