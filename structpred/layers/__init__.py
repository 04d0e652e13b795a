"""Small reusable modules."""

from .poolers import MultiScaleRoIAlign, MultiScaleRoIPool, RoIPooler
from .rnn import LSTM, RNN, LSTMCell, RNNCell
from .stn import SpatialTransformer

__all__ = [
    "LSTM",
    "RNN",
    "LSTMCell",
    "MultiScaleRoIAlign",
    "MultiScaleRoIPool",
    "RNNCell",
    "RoIPooler",
    "SpatialTransformer",
]
