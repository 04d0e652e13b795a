"""structpred.metrics vs pycocotools: ``python benchmarks/metrics.py`` (= ``structpred bench metrics``)."""

from structpred.bench.metrics import main

if __name__ == "__main__":
    main()
