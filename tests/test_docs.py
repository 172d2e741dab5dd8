"""The documentation matches the code: settings and their defaults, commands and their options,
the package map, and the links between pages."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

import click
import pytest

from app.cli import main
from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _settings_rows() -> dict[str, str]:
    """``HOOKBIN_X`` -> its default cell, from the server settings tables of docs/settings.md."""
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    server_part = text.split("## Outside the server", 1)[0]
    rows = {}
    for line in server_part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`HOOKBIN_[A-Z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def _documented_default(cell: str, default: object) -> bool:
    if default == "":
        return cell.startswith("(empty")
    if not (cell.startswith("`") and cell.endswith("`")):
        return False
    shown = cell.strip("`")
    if isinstance(default, bool):
        return shown == str(default).lower()
    if isinstance(default, int | float):
        return float(shown) == float(default)
    return shown == default


def test_settings_page_lists_every_setting_with_its_default() -> None:
    rows = _settings_rows()
    for f in fields(Settings):
        name = f"HOOKBIN_{f.name.upper()}"
        assert name in rows, f"{name} is missing from docs/settings.md"
        if f.default is not MISSING:  # the database URL's default is built from the project path
            assert _documented_default(rows[name], f.default), (
                f"{name}: docs/settings.md says {rows[name]}, app/config.py says {f.default!r}"
            )
    known = {f"HOOKBIN_{f.name.upper()}" for f in fields(Settings)}
    assert not set(rows) - known, f"documented settings that do not exist: {set(rows) - known}"


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


def test_commands_page_names_every_command_and_option() -> None:
    # The listen command's options are described on its own page, which the commands page links.
    text = "\n".join(
        (DOCS / page).read_text(encoding="utf-8") for page in ("commands.md", "listen.md")
    )
    for path, command in _commands(main, "hookbin"):
        assert f"`{path}" in text, f"{path} is missing from docs/commands.md"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert f"`{opt}" in text, f"{path} {opt} is not documented"


def test_readme_maps_every_package() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How it is built", 1)[1]
    packages = sorted(
        p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "app").glob("*/__init__.py")
    )
    assert packages
    missing = [p for p in packages if f"`{p}/`" not in section]
    assert not missing, f"packages missing from the README's map: {missing}"
    # Each package's row names every module in it, so the map cannot fall behind the code.
    rows = {
        line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")
    }
    unnamed = [
        f"{package}/{module.stem}"
        for package in packages
        for module in sorted((ROOT / package).glob("*.py"))
        if not module.stem.startswith("__")
        and f"`{module.stem}`" not in rows.get(f"`{package}/`", "")
    ]
    assert not unnamed, f"modules missing from their package's row in the README's map: {unnamed}"


def _anchor(heading: str) -> str:
    """The fragment a Markdown renderer gives a heading (GitHub's rule)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_between_pages_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    links = [link for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)]
    for link in links:
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link to {link}: no such file"
        if fragment:
            assert fragment in _anchors(path), f"{page.name}: link to {link}: no such heading"


def test_docs_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not list {page.name}"
