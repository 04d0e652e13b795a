"""Stereo and monocular depth networks, images/s and GFLOP/s beside StereoSGBM: ``python benchmarks/depth.py``
(``structpred.bench.depth``)."""

from structpred.bench.depth import main

if __name__ == "__main__":
    main()
