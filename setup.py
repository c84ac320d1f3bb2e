"""Builds the C hot path (``invalidator/hotpath/_hotpath.c`` with ``placement.c``); everything
else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "invalidator.hotpath._hotpath",
            ["invalidator/hotpath/_hotpath.c", "invalidator/hotpath/placement.c"],
            depends=["invalidator/hotpath/placement.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
