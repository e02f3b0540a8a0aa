"""The package metadata, the README's commands and CI stay consistent."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "ptalker_cli").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"


def test_readme_first_lines_are_the_install_and_test_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    install, test = block
    assert install.startswith("pip install torch==2.13.0 && pip install . && ptalker animate ")
    assert "examples/speech.wav" in install and (ROOT / "examples" / "speech.wav").exists()
    assert test.endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and test in ci  # verbatim; tests/test_readme.py checks they are .ci/run's commands
    assert "-eq 5" in ci  # pytest's "no tests collected" fails CI


def test_console_script_and_module_entry_point():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["ptalker"] == "ptalker_cli.cli.app:main"
    assert meta["project"]["name"] == "ptalker"
    assert (ROOT / "ptalker_cli" / "__main__.py").exists()


def test_shipped_data_keep_license_and_provenance():
    for folder in [
        ROOT / "templates" / "ict",
        ROOT / "ptalker_cli" / "data" / "synth" / "assets",
        ROOT / "ptalker_cli" / "data" / "regions" / "biwi",
        ROOT / "ptalker_cli" / "data" / "regions" / "vocaset",
    ]:
        assert (folder / "LICENSE").exists() and (folder / "PROVENANCE.md").exists()
