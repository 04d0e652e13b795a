"""Dense CRF vs pydensecrf2: ``python benchmarks/crf.py`` (same as ``structpred bench crf``)."""

from structpred.bench.crf import main

if __name__ == "__main__":
    main()
