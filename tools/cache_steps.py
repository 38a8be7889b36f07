"""Ties each cache kind's version to its code (``memguard/common/cache_steps.py``).

    python tools/cache_steps.py check    # exit 1 if a kind's code changed while its version did not
    python tools/cache_steps.py record   # record the current code of every kind whose version moved
    python tools/cache_steps.py record --refactor   # also record code that changed at the same version:
                                         # only for a change that keeps every entry byte-identical
                                         # (bench/main_job_digest.py --check shows it)

The record (``tests/common/cache_code.json``) holds, per kind, its version and a digest of its modules'
code: each module's syntax tree without docstrings, so comments, docstrings and formatting never force a
bump, and any other change does. Written by hand: no library ties cache keys to source code.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "common" / "cache_code.json"
sys.path.insert(0, str(REPO))

from memguard.common.cache_steps import STEPS  # noqa: E402  (after the repo is importable)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            first = body[0] if body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def module_digest(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"cache_steps lists {name!r}, which does not exist")
    tree = _without_docstrings(ast.parse(Path(spec.origin).read_text()))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def current() -> dict[str, dict[str, object]]:
    """Per kind: its version and the digest of each of its modules."""
    return {
        kind: {"version": step.version, "modules": {name: module_digest(name) for name in sorted(step.modules)}}
        for kind, step in sorted(STEPS.items())
    }


def problems(recorded: dict[str, dict[str, object]], now: dict[str, dict[str, object]]) -> list[str]:
    """What is wrong between the record and the code: a kind whose code changed at the same version, a
    kind whose version moved without a new record, a kind added or removed without one."""
    found = []
    for kind in sorted(recorded.keys() | now.keys()):
        old, new = recorded.get(kind), now.get(kind)
        if old is None or new is None:
            found.append(f"{kind}: {'not recorded' if old is None else 'recorded but no longer a kind'}; run record")
        elif old["version"] == new["version"] and old["modules"] != new["modules"]:
            changed = sorted(m for m in {**old["modules"], **new["modules"]}  # type: ignore[dict-item]
                             if old["modules"].get(m) != new["modules"].get(m))  # type: ignore[attr-defined]
            found.append(f"{kind}: code changed ({', '.join(changed)}) at version {new['version']}: bump its "
                         "version in memguard/common/cache_steps.py if entries would differ, then run record")  # fmt: skip
        elif old["version"] != new["version"] and old["modules"] == new["modules"]:
            found.append(f"{kind}: version {old['version']} → {new['version']} with the same code; run record")
        elif old["version"] != new["version"]:
            found.append(f"{kind}: version moved to {new['version']}; run record")
    return found


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    now = current()
    if command == "check":
        for line in problems(recorded, now):
            print(line)
        return 1 if problems(recorded, now) else 0
    if command == "record":
        refused = [k for k in now if k in recorded and recorded[k]["version"] == now[k]["version"]
                   and recorded[k]["modules"] != now[k]["modules"]]  # fmt: skip
        if refused and "--refactor" not in argv:
            print(f"refused: {', '.join(refused)} changed code without a version bump", file=sys.stderr)
            return 1
        RECORD.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")
        print(f"recorded {len(now)} kinds in {RECORD.relative_to(REPO)}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
