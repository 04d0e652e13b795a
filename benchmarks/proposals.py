"""Selective Search recall vs number of proposals: ``python benchmarks/proposals.py --out recall.png``."""

from structpred.bench.proposals import main

if __name__ == "__main__":
    main()
