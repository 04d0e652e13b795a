"""YOLO vs Faster R-CNN inference: ``python benchmarks/yolo.py`` (= ``structpred bench yolo``)."""

from structpred.bench.yolo import main

if __name__ == "__main__":
    main()
