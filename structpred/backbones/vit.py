"""(Scaffold: the vit backbone is being written in issue 17.)"""

from __future__ import annotations
