"""The README and the docs it points to stay true: every setting is in docs/settings.md, every
error code in docs/api.md, the README's commands exist, and every page it maps exists (and every
page in docs/ is on the map)."""

from __future__ import annotations

import re
from pathlib import Path

from serve.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_settings_table() -> None:
    table = (ROOT / "docs" / "settings.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in table]
    assert missing == []


def test_readme_commands_are_make_targets_and_ci_calls_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "lint"):
        assert f"make {target}" in README
        assert f"\n{target}:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_error_code_is_in_the_api_page_with_its_status_and_kind() -> None:
    from serve.errors import CATALOGUE

    api = (ROOT / "docs" / "api.md").read_text()
    missing = [
        code for code, entry in CATALOGUE.items() if f"| `{code}` | {entry.status} | {entry.kind.value} |" not in api
    ]
    assert missing == []


def test_the_readme_maps_every_page_and_every_link_resolves() -> None:
    linked = set(re.findall(r"\]\((docs/[a-z_-]+\.md)\)", README))
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert linked == pages
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([a-z_-]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (ROOT / "docs" / target).exists(), f"{page.name} links to a missing {target}"


def test_the_readme_stays_a_front_door() -> None:
    assert len(README.splitlines()) < 200
    for must in ("make run", "make test", "/ui", "videogen generate", "curl", '"video_url"'):
        assert must in README, must
