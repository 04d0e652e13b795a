"""structpred RNN/LSTM vs torch.nn: ``python benchmarks/rnn.py`` (same as ``structpred bench rnn``)."""

from structpred.bench.rnn import main

if __name__ == "__main__":
    main()
