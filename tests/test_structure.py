"""The package's shape, checked: imports flow one way (no cycles, counting imports inside functions),
no module reaches for another's private names, modules stay readable (<= 400 lines), and the
training loop's functions fit on a screen (<= 60 lines)."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "langclip"


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, list[str], int]]:
    """(imported langclip module, names taken from it, line) for every import in the file."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                target = ".".join(base[: len(base) - (n.level - 1)] + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            if not target.startswith("langclip"):
                continue
            names = [a.name for a in n.names]
            subs = [f"{target}.{x}" for x in names if f"{target}.{x}" in known]
            out += [(s, [], n.lineno) for s in subs]
            rest = [x for x in names if f"{target}.{x}" not in known]
            if rest or not subs:
                out.append((target, rest, n.lineno))
        elif isinstance(n, ast.Import):
            out += [(a.name, [], n.lineno) for a in n.names if a.name.startswith("langclip")]
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    g = {m: set() for m in known}
    for m, p in known.items():
        for target, _, _ in imports(m, p, known):
            if target in known and target != m:
                g[m].add(target)
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles():
    g = graph()
    assert len(g) > 25 and "langclip.train.loop" in g["langclip.train"]
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_another_modules_private_names():
    known = modules()
    bad = [f"{p.relative_to(SRC)}:{line}: {x} from {t}" for m, p in known.items()
           for t, names, line in imports(m, p, known) for x in names if x.startswith("_") and t != m]
    assert not bad, bad


def test_modules_stay_readable_and_the_training_loop_fits_on_a_screen():
    long_modules = {str(p.relative_to(SRC)): n for p in PKG.rglob("*.py")
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long_modules, long_modules
    long_functions = []
    for p in (PKG / "train").glob("*.py"):
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60:
                long_functions.append(f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert not long_functions, long_functions


def test_fault_injection_is_not_in_library_code():
    text = "\n".join(p.read_text(encoding="utf-8") for p in PKG.rglob("*.py"))
    assert "FAULT" not in text and "SIGKILL" not in text
