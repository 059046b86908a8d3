"""The README opens with exactly the two commands, and CI runs the second one verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _code_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_demo_and_test_commands():
    blocks = _code_blocks((REPO / "README.md").read_text())
    demo, tests = blocks[0], blocks[1]
    assert demo.count("\n") == 0 and tests.count("\n") == 0, "each of the two commands is a single line"
    assert demo.startswith("bash infra/setup.sh && ") and demo.endswith("meddiff demo")
    assert tests.startswith("bash infra/setup.sh && ") and "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command verbatim"


def test_setup_script_and_ci_are_executable():
    for path in (REPO / "infra" / "setup.sh", REPO / ".ci" / "run"):
        assert path.stat().st_mode & 0o111, f"{path} is not executable"
