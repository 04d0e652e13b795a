"""RAFT vs torchvision and the correlation ops: ``python benchmarks/flow.py`` (``structpred.bench.flow``)."""

from structpred.bench.flow import main

if __name__ == "__main__":
    main()
