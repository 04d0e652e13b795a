"""structpred.ops vs torchvision.ops: ``python benchmarks/ops.py`` (same as ``structpred bench ops``)."""

from structpred.bench.ops import main

if __name__ == "__main__":
    main()
