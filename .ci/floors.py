"""Print a pip constraints file pinning every core dependency of pyproject.toml to its
declared floor's release line (``>=X`` → ``==X.*``), for CI's job at the lowest versions.
Standard library only: it runs before anything is installed."""

import re
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
for line in project["dependencies"]:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)
    floor = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", line)
    if floor is not None:
        print(f"{name}=={floor.group(1)}.*")  # the floor release line (torch 2.4.x …)
