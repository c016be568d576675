"""Packaging glue: the repository root IS the package, installed as `humangen` (pyproject.toml has the metadata).

`package_dir` maps `humangen` to the root; every subpackage (nodes, models, models.ops, utils, runner, ...) is found
automatically and installed as `humangen.<name>`. Workflows and the web/ extension ship as package data.
"""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT_MODULES = ("__init__", "__main__")  # the root also holds setup.py and install.py: not part of the package


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "humangen":
            modules = [m for m in modules if m[1] in ROOT_MODULES]
        return modules


SUBPACKAGES = find_packages(".", include=["nodes", "nodes.*", "models", "models.*", "utils", "utils.*",
                                          "runner", "runner.*"])

setup(
    packages=["humangen"] + [f"humangen.{name}" for name in SUBPACKAGES],
    package_dir={"humangen": "."},
    package_data={"humangen": ["workflows/*.json", "workflows/api/*.json", "workflows/assets/*", "workflows/*.md",
                               "web/*.js", "web/package.json", "web/pose_editor/*.js"]},
    cmdclass={"build_py": BuildPy},
)
