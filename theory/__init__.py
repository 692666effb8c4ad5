"""theory: the bounds of "Why Random Pruning Is All We Need to Start Sparse" (Gadhikar, Mukherjee, Burkholz,
ICML 2023) as pure functions (numpy/scipy/sympy only; importing this package never imports torch).

Public names are re-exported here once their modules exist; import from the submodules meanwhile.
"""
