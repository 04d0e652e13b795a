"""Small reusable modules."""

from .poolers import MultiScaleRoIAlign
from .rnn import LSTM, RNN, LSTMCell, RNNCell

__all__ = ["LSTM", "RNN", "LSTMCell", "MultiScaleRoIAlign", "RNNCell"]
