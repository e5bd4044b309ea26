"""The package tree is the architecture (docs/architecture.md): these tests keep it that way.

* the root of ``rep_mm/`` holds only the core modules; everything else lives in a subpackage;
* no library module imports the demo (only the demo itself and the ``rep-mm demo`` dispatch);
* the module-level imports between rep_mm's modules have no cycle.

Imports are read with :mod:`ast` (nothing is imported). An import of ``a.b.c`` also imports the
packages ``a`` and ``a.b``; those implicit edges count, except towards the importer's own
ancestor packages (which Python has already started importing).
"""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

PACKAGE = Path(__file__).resolve().parents[1] / 'rep_mm'
CORE_MODULES = {'__init__.py', 'version.py', 'fusion.py', 'reparam.py', 'registry.py'}
DEMO_USERS = ('rep_mm.demo', 'rep_mm.cli')  # the demo itself and its `rep-mm demo` dispatch


def module_files() -> Dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob('*.py'):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        modules['.'.join(parts)] = path
    return modules


MODULES = module_files()


def is_package(name: str) -> bool:
    return MODULES[name].name == '__init__.py'


def resolve(importer: str, level: int, module: Optional[str]) -> str:
    base = importer.split('.')
    if not is_package(importer):
        base = base[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return '.'.join(base + ([module] if module else []))


def ancestors(name: str) -> List[str]:
    parts = name.split('.')
    return ['.'.join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(name: str, top_level_only: bool) -> Set[str]:
    """rep_mm modules that ``name`` imports (``top_level_only``: outside functions/classes)."""
    tree = ast.parse(MODULES[name].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    targets: Set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node.level, node.module) if node.level else node.module or ''
            targets.add(source)
            targets.update(f'{source}.{alias.name}' for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try)) and top_level_only:
            for child in ast.walk(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets.update(imported_modules_of_node(name, child))
    found = {t for t in targets if t in MODULES}
    own_ancestors = set(ancestors(name))
    implicit = {a for t in found for a in ancestors(t) if a not in own_ancestors}
    return (found | implicit) - {name}


def imported_modules_of_node(name: str, node: ast.AST) -> Set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    source = resolve(name, node.level, node.module) if node.level else node.module or ''
    return {source} | {f'{source}.{alias.name}' for alias in node.names}


def test_package_root_holds_only_the_core_modules():
    root_files = {p.name for p in PACKAGE.glob('*.py')}
    assert root_files == CORE_MODULES, (
        f'modules outside a subpackage: {sorted(root_files - CORE_MODULES)}; the root keeps '
        f'only {sorted(CORE_MODULES)}')


def test_no_library_module_imports_the_demo():
    offenders = sorted(
        name for name in MODULES
        if not name.startswith(DEMO_USERS)
        and any(t == 'rep_mm.demo' or t.startswith('rep_mm.demo.')
                for t in imported_modules(name, top_level_only=False)))
    assert offenders == [], f'library modules importing rep_mm.demo: {offenders}'


def test_module_level_imports_have_no_cycle():
    graph = {name: imported_modules(name, top_level_only=True) for name in MODULES}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []
    cycles: List[List[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == [], 'import cycles:\n' + '\n'.join(' -> '.join(c) for c in cycles[:5])


def test_the_layout_checks_see_the_package():
    """The checks above would pass vacuously on an empty tree: they must see real edges."""
    assert len(MODULES) > 80
    assert 'rep_mm.fusion' in imported_modules('rep_mm.blocks.repvgg', top_level_only=True)
    assert 'rep_mm.demo.run' in imported_modules('rep_mm.cli.dispatch',
                                                            top_level_only=False)
