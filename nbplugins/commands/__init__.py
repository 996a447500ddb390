"""Command groups of the ``nbplugins`` CLI, one module per feature; :mod:`nbplugins.cli` wires them.

Each module defines one click group named ``group`` and imports its library lazily inside the
commands, so ``nbplugins --help`` stays fast.
"""
