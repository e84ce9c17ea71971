"""The pure core: desired and observed state as plain data, and the planner that compares them.

Nothing in here does I/O (tests/unit/test_layers.py keeps it so): the same inputs always give the same plan, which
is what makes `plan` a contract for `apply`.
"""
