"""Dense CRF vs pydensecrf2 and Mask R-CNN vs torchvision: ``python benchmarks/segmentation.py``
(same as ``structpred bench segmentation``)."""

from structpred.bench.segmentation import main

if __name__ == "__main__":
    main()
