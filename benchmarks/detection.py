"""Faster R-CNN vs torchvision's: ``python benchmarks/detection.py`` (= ``structpred bench detection``)."""

from structpred.bench.detection import main

if __name__ == "__main__":
    main()
