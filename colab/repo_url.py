"""Write your repository's address where Colab needs it:  python3 colab/repo_url.py URL

`make colab REPO_URL=https://github.com/OWNER/NAME` runs this. It sets REPO_URL in
utils/colab.py (the one place it is kept), in every notebook's setup cell, and in the "Open in
Colab" badges of the README and the notebooks. Python's standard library alone: a fork's owner
runs it before any environment is built.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "main"  # the badges open the notebooks of this branch
BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/"
                   r"colab-badge\.svg\)\]\(([^)]*)\)")
SETUP_LINE = re.compile(r'^REPO_URL = "[^"]*"', re.M)


def colab_link(repo_url, notebook):
    """The address that opens `notebook` (notebooks/NAME.ipynb) of the GitHub repository on Colab."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", repo_url)
    if not match:
        raise ValueError(f"{repo_url}: Colab opens notebooks from GitHub, "
                         "https://github.com/OWNER/NAME")
    owner, name = match.groups()
    return (f"https://colab.research.google.com/github/{owner}/{name}/blob/{BRANCH}/"
            f"notebooks/{notebook}")


def badge(repo_url, notebook):
    return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_link(repo_url, notebook)})")


def write_repo_url(repo_url, root=ROOT, badges=True):
    """Set `repo_url` in utils/colab.py, in every notebook's setup cell and (GitHub addresses
    only) in the badges: the notebooks' first cells and the README's table of notebooks."""
    root = Path(root)
    if badges:
        colab_link(repo_url, "check")  # refuse a non-GitHub address before writing anything
    module = root / "utils" / "colab.py"
    module.write_text(SETUP_LINE.sub(f'REPO_URL = "{repo_url}"', module.read_text(), count=1))
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            text = "".join(cell["source"])
            text = SETUP_LINE.sub(f'REPO_URL = "{repo_url}"', text)
            if badges:
                text = BADGE.sub(lambda m, name=path.name: badge(repo_url, name), text)
            cell["source"] = text.splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    if badges:
        readme = root / "README.md"
        readme.write_text(BADGE.sub(lambda m: badge(repo_url, m.group(1).rsplit("/", 1)[-1]),
                                    readme.read_text()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 colab/repo_url.py https://github.com/OWNER/NAME")
    try:
        write_repo_url(sys.argv[1])
    except ValueError as e:
        sys.exit(str(e))
