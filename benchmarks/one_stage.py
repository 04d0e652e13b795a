"""One-stage detectors vs torchvision: ``python benchmarks/one_stage.py`` (``structpred.bench.one_stage``)."""

from structpred.bench.one_stage import main

if __name__ == "__main__":
    main()
