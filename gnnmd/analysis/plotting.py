"""matplotlib set up once for files, not screens (the Agg backend): every figure gnnmd draws is a PNG."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
