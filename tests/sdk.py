"""The provider SDKs as installed: each resource's type token and the wire names (camelCase) of its inputs.

Read from the generated sources (`@pulumi.type_token(...)` and the `@pulumi.getter(name=...)` of the resource's
`...Args` or `...InitArgs` class), without importing the packages, so that a test can check a policy's type tokens
and input names against the exact provider versions the project pins.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.util import find_spec
from pathlib import Path

_RESOURCE = re.compile(r'@pulumi\.type_token\("([^"]+)"\)\nclass (\w+)\(pulumi\.(?:Custom|Component)Resource\)')
_GETTER = re.compile(r'@pulumi\.getter(?:\(name="(\w+)"\))?\n    def (\w+)\(self\)')


@cache
def resource_inputs(package: str) -> dict[str, tuple[str, ...]]:
    """Type token -> input wire names, for every resource of an installed provider package (pulumi_aws, ...)."""
    spec = find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    found: dict[str, tuple[str, ...]] = {}
    for path in root.rglob("*.py"):
        source = path.read_text()
        if "@pulumi.type_token(" not in source:
            continue
        for match in _RESOURCE.finditer(source):
            token, cls = match.groups()
            # pulumi-kubernetes names a resource's arguments ...InitArgs where ...Args is a nested type (Secret).
            args = re.search(rf"@pulumi\.input_type\nclass {cls}(?:Init)?Args:.*?(?=\n@pulumi\.|\nclass |\Z)",
                             source, re.S)
            names = tuple(a or b for a, b in _GETTER.findall(args.group(0))) if args else ()
            found[token] = names
    return found


def input_type(package: str, module: str, cls: str) -> tuple[str, ...]:
    """The wire names of a nested input type (`input_type("pulumi_aws", "ecr", "RepositoryImageScanning...Args")`)."""
    spec = find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    source = (Path(next(iter(spec.submodule_search_locations))) / module / "_inputs.py").read_text()
    body = re.search(rf"@pulumi\.input_type\nclass {cls}:.*?(?=\n@pulumi\.|\nclass |\Z)", source, re.S)
    assert body is not None, f"{package}.{module} has no input type {cls}"
    return tuple(a or b for a, b in _GETTER.findall(body.group(0)))
