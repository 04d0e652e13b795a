"""SINT frames/s beside OpenCV NCC and MIL; candidates/s of the RoI branch.

``python benchmarks/sint.py`` runs :mod:`structpred.bench.sint` (also ``structpred bench sint``).
"""

from structpred.bench.sint import main

if __name__ == "__main__":
    main()
