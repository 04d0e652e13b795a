"""structpred's MOT metrics vs motmetrics and trackeval: ``python benchmarks/tracking_metrics.py``
(= ``structpred bench tracking_metrics``)."""

from structpred.bench.tracking_metrics import main

if __name__ == "__main__":
    main()
