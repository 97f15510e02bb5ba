"""A template library: a directory of .rego files indexed by package name.

Postee ships its templates as a directory (`rego-templates/`) whose `common/` subfolder holds the
`package postee` helpers every template may call. Users keep their own copy of that directory and
point Postee at it, so a user directory (`--rego-templates DIR`, env `POSTEE_REGO_TEMPLATES`)
*replaces* the bundled library rather than being merged with it: their templates keep behaving as
they did, helpers included.

Each template is compiled on its own with just the common helpers: loading several template packages
into one regopy interpreter leaks enclosing package names between them (e.g. `postee.vuls.html` and
`postee.vuls.html.aggregation`) and is slower to compile.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import attrs

ENV_TEMPLATES = "POSTEE_REGO_TEMPLATES"
COMMON_DIR = "common"
REGO_SUFFIX = ".rego"
TEST_SUFFIX = "_test.rego"

# `package a.b.c` possibly followed by a comment; the first one in the file names its package.
_PACKAGE_LINE = re.compile(r"^[ \t]*package[ \t]+([A-Za-z_][\w.]*)", re.MULTILINE)


class TemplateLibraryError(Exception):
    """The library directory is unusable, or a package is not in it."""


def bundled_templates_dir() -> Path:
    """The template library shipped as package data (`postee/templates`)."""
    return Path(str(resources.files("postee") / "templates"))


def package_of(source: str) -> str | None:
    """The package a Rego module declares, or None when it has no `package` line."""
    match = _PACKAGE_LINE.search(source)
    return match.group(1) if match else None


@attrs.frozen
class TemplateLibrary:
    """Package name -> template file(s), plus the common helper modules (filename -> source)."""

    root: Path
    packages: Mapping[str, tuple[Path, ...]]
    common: Mapping[str, str]

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None) -> TemplateLibrary:
        """Index `root`, else `$POSTEE_REGO_TEMPLATES`, else the bundled library."""
        if root is None:
            root = os.environ.get(ENV_TEMPLATES) or bundled_templates_dir()
        root = Path(root)
        if not root.is_dir():
            raise TemplateLibraryError(f"template directory {str(root)!r} does not exist")
        packages: dict[str, list[Path]] = {}
        common: dict[str, str] = {}
        for path in sorted(root.rglob("*" + REGO_SUFFIX)):
            if path.name.endswith(TEST_SUFFIX) or not path.is_file():
                continue
            source = path.read_text(encoding="utf-8")
            relative = path.relative_to(root)
            if relative.parts[0] == COMMON_DIR:
                common[str(path)] = source
                continue
            package = package_of(source)
            if package is not None:
                packages.setdefault(package, []).append(path)
        return cls(root, {name: tuple(files) for name, files in packages.items()}, common)

    def __contains__(self, package: object) -> bool:
        return package in self.packages

    def files_of(self, package: str) -> tuple[Path, ...]:
        try:
            return self.packages[package]
        except KeyError:
            raise TemplateLibraryError(
                f"no template package {package!r} in {self.root} (known: {', '.join(sorted(self.packages)) or 'none'})"
            ) from None

    def modules_for(self, package: str) -> dict[str, str]:
        """The module set that evaluates `package`: its file(s) plus the common helpers.

        Module names are the files' paths, so compile errors point at the file.
        """
        modules = dict(self.common)
        for path in self.files_of(package):
            modules[str(path)] = path.read_text(encoding="utf-8")
        return modules

    def with_common(self, name: str, source: str) -> dict[str, str]:
        """A module set for an inline or fetched template: `source` plus the common helpers."""
        modules = dict(self.common)
        modules[name] = source
        return modules
