"""The README stays true: every setting is documented, and the two commands exist."""

from __future__ import annotations

from pathlib import Path

from serve.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in readme]
    assert missing == []


def test_readme_commands_are_make_targets_and_ci_calls_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "lint"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_error_code_is_in_the_readme_with_its_status_and_kind() -> None:
    from serve.errors import CATALOGUE

    readme = (ROOT / "README.md").read_text()
    missing = [
        code for code, entry in CATALOGUE.items() if f"| `{code}` | {entry.status} | {entry.kind.value} |" not in readme
    ]
    assert missing == []
