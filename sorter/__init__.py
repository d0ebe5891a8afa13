"""sorterd domain and pipeline: barcodes, sort plans, the decision core, item tracking.

Nothing in this package does I/O or imports a hardware library; `drivers` does the I/O.
"""

__version__ = "0.1.0"
