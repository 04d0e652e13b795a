"""Mask R-CNN vs torchvision's: ``python benchmarks/mask_rcnn.py`` (= ``structpred bench mask_rcnn``)."""

from structpred.bench.mask_rcnn import main

if __name__ == "__main__":
    main()
