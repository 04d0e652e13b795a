"""structpred: deep structured prediction in PyTorch — boxes, masks, label maps, flow, depth,
tracks and sequences — with readable, tested implementations of the field's canonical systems.
"""

__version__ = "0.1.0"
