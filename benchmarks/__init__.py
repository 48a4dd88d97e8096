"""The benchmark harness: our ALS against `implicit`'s, and approximate item indexes against exact
search. It is a folder of the repository, not part of the installed library: ``recsys`` never
imports it; ``scripts/benchmark*.py`` put the repository root on ``sys.path`` to use it.
"""
