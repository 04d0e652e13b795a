"""Keypoint R-CNN vs torchvision's: ``python benchmarks/keypoints.py`` (= ``structpred bench keypoints``)."""

from structpred.bench.keypoints import main

if __name__ == "__main__":
    main()
