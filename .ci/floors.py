"""Print a pip constraints file pinning every core dependency of pyproject.toml to its
declared floor's release line (``>=X`` → ``==X.*``), for CI's job at the lowest versions."""

from pathlib import Path

import tomllib
from packaging.requirements import Requirement

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
for line in project["dependencies"]:
    requirement = Requirement(line)
    floor = next((s.version for s in requirement.specifier if s.operator == ">="), None)
    if floor is not None:
        print(f"{requirement.name}=={floor}.*")  # the floor release line (torch 2.4.x …)
