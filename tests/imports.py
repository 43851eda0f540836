"""What a module imports, read from its source (no import runs): for the tests
that hold the layering and the sans-IO core to their rules."""

import ast
from pathlib import Path


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
