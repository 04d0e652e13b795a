"""(Scaffold: the vit classifiers are being written in issue 17.)"""

from __future__ import annotations
