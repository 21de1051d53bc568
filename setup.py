"""One import name, ``acula``, mapped from the repository's folders (metadata lives in pyproject.toml).

``acula`` -> ``acula/`` (the public Python API), ``acula.service`` -> ``service/`` (torch-free),
``acula.training`` -> ``training/``. The service image's build context has no ``training/``, so its wheel
simply lacks ``acula.training``; that is why the package list is computed here rather than listed.
"""

from pathlib import Path

from setuptools import find_packages, setup

FOLDERS = {"acula": "acula", "acula.service": "service", "acula.training": "training"}


def _packages() -> tuple[list[str], dict[str, str]]:
    names: list[str] = []
    mapping: dict[str, str] = {}
    for name, folder in FOLDERS.items():
        if not (Path(folder) / "__init__.py").is_file():
            continue
        mapping[name] = folder
        names += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    return names, mapping


packages, package_dir = _packages()
setup(packages=packages, package_dir=package_dir)
