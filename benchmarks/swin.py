"""Swin-T vs timm, classifier and backbone: ``python benchmarks/swin.py`` (= ``structpred bench swin``)."""

from structpred.bench.swin import main

if __name__ == "__main__":
    main()
