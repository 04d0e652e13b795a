"""Exported models in onnxruntime vs eager PyTorch (speed ratios and parity):
``python benchmarks/export.py`` (same as ``structpred bench export``)."""

from structpred.bench.export import main

if __name__ == "__main__":
    main()
