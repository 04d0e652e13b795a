"""The unified multi-task network vs its four single-task models run one after another.

``python benchmarks/multitask.py`` runs :mod:`structpred.bench.multitask` (also
``structpred bench multitask``).
"""

from structpred.bench.multitask import main

if __name__ == "__main__":
    main()
