"""The README's commands are what CI runs (.ci/run), and the files and test selections they
name exist."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI_RUN = (ROOT / ".ci" / "run").read_text()
CI_APT = (ROOT / ".ci" / "apt-packages.txt").read_text()


def _bash_blocks(markdown: str) -> list[list[str]]:
    return [[ln for ln in block.splitlines() if ln.strip()]
            for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)]


def _commands(script: str) -> list[str]:
    """The script's command lines: comments and blank lines dropped, continuations joined."""
    text = re.sub(r"\\\n\s*", " ", script)
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _marker_selection(line: str) -> str | None:
    """NAME in a `pytest ... -m NAME` command line (comments ignored)."""
    args = shlex.split(line, comments=True)
    if "pytest" not in args:
        return None
    after = args[args.index("pytest") + 1:]
    return after[after.index("-m") + 1] if "-m" in after else None


def test_ci_runs_the_readme_lines_verbatim():
    first = _bash_blocks(README)[0]
    assert len(first) == 2 and first[1].endswith("python -m pytest -q"), first
    commands = _commands(CI_RUN)
    for line in first:
        assert line in commands, f"{line!r} is not a command of .ci/run"
    # ...the test command with every system-gated test required, and no other pytest run
    test_at = commands.index(first[1])
    assert commands.index("export PTALKER_REQUIRE_SYSTEM_TESTS=1") < test_at
    assert [c for c in commands if re.search(r"-m pytest\b|^pytest\b", c)] == [first[1]]


def test_ci_installs_what_the_system_gates_need():
    packages = [ln.strip() for ln in CI_APT.splitlines() if ln.strip() and not ln.startswith("#")]
    for needed in ("gcc", "libc6-dev", "libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libosmesa6", "festival"):
        assert needed in packages


def test_named_test_files_exist():
    texts = [README, CI_RUN, CI_APT] + [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    named = {m for t in texts for m in re.findall(r"tests/[\w/]+\.py", t)}
    assert "tests/test_readme.py" in named
    assert sorted(n for n in named if not (ROOT / n).is_file()) == []


def test_promised_test_selections_select_tests():
    """Every `pytest -m NAME` the README shows is a marker some test carries."""
    promised = {m for block in _bash_blocks(README) for line in block if (m := _marker_selection(line))}
    assert promised, "the README shows no marker selection"
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for marker in promised:
        assert re.search(rf"pytest\.mark\.{marker}\b", sources), f"no test is marked {marker}"
