"""The README and docs/: every command works as written from a fresh clone, every link resolves."""
import re

import pytest

from conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_commands_name_the_virtual_environment_and_files_that_exist(document):
    text = document.read_text()
    assert not re.search(r"(^|[`\s])python3? (benchmarks|-m)", text, re.M), \
        "a bare `python`: write .venv/bin/python, which the two commands create"
    for script in set(re.findall(r"benchmarks/[a-z_]+\.py", text)):
        assert (REPO / script).is_file(), script


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_links_resolve(document):
    for target in re.findall(r"\]\(([^)#]+)\)", document.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (document.parent / target).exists(), f"{document.name}: {target}"
