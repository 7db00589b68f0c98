"""The package's layers (docs/architecture.md): each folder of amr/ imports only the layers
below it, and no module imports itself back through others. Imports are read from the source
with ast, inside functions too, so a lazy import cannot hide a cycle or an upward edge."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "amr"
# bottom to top; a layer may import the layers before it (and itself), never one after it
LAYERS = ["util", "config", "data", "kernels", "extract", "model", "losses", "evaluation", "engine",
          "reporting", "pipeline", "cli"]
ROOT_MODULES = {"__init__", "__main__"}  # the package itself and `python -m amr`


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules a file imports (``from a import b`` counts a.b when b is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, name, set(found)) for name, path in found.items()}


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer():
    loose = sorted(name for name in modules() if name != "amr" and layer(name) is None
                   and name.split(".")[-1] not in ROOT_MODULES)
    assert loose == [], f"modules outside the layer folders: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.suffix == ".py"} == {f"{m}.py" for m in ROOT_MODULES}


def test_no_import_goes_up_or_across_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    wrong = []
    for module, targets in graph().items():
        if layer(module) is None:
            continue
        for target in targets:
            if layer(target) is None:
                if target == "amr":
                    wrong.append(f"{module} -> {target}")
                continue
            if rank[layer(target)] > rank[layer(module)] or (
                    rank[layer(target)] == rank[layer(module)] and layer(target) != layer(module)):
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    edges = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == [], f"import cycles: {cycles}"


def test_each_layer_says_what_it_may_import():
    for name in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import:" in doc, name


def test_each_layer_imports_only_what_its_docstring_allows():
    import re

    allowed = {}
    for name in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8"))) or ""
        line = doc.split("May import:", 1)[1]
        below = LAYERS[: LAYERS.index(name)]
        allowed[name] = set(below) if "every layer below" in line else set(re.findall(r"amr\.(\w+)", line))
        assert allowed[name] <= set(below), f"{name}'s docstring allows a layer above it"
    wrong = sorted(f"{module} -> {target}" for module, targets in graph().items() if layer(module)
                   for target in targets if layer(target) and layer(target) != layer(module)
                   and layer(target) not in allowed[layer(module)])
    assert wrong == [], "imports that the layer's docstring does not allow:\n" + "\n".join(wrong)
