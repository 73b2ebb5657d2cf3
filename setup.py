"""Build of the compiled NIC datapath (fabric/nic/_engine.c); the rest is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fabric.nic._engine", ["fabric/nic/_engine.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers"])])
