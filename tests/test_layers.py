"""The layers point one way: nothing under lib/ imports the trading rules, intents or functions."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UPPER_LAYERS = ('trading', 'intents', 'functions', 'strategies', 'simulator')


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def test_lib_imports_no_upper_layer():
    offenders = {str(path.relative_to(REPO)): sorted(_imported_packages(path) & set(UPPER_LAYERS))
                 for path in sorted((REPO / 'lib').rglob('*.py'))}
    assert {path: layers for path, layers in offenders.items() if layers} == {}


def test_trading_imports_no_intent_or_function():
    offenders = {str(path.relative_to(REPO)): sorted(_imported_packages(path) & {'intents', 'functions', 'simulator'})
                 for path in sorted((REPO / 'trading').rglob('*.py'))}
    assert {path: layers for path, layers in offenders.items() if layers} == {}
