"""sorterd's domain and line core: barcodes, sort plans, manifests, the decision core, item
tracking, the chute book and the MQTT contract.

It imports no hardware or network library and opens no device or socket: `drivers` does
that. The only files it reads are the site's own (config, sort plan, manifests), and
`replay` runs its what-if in a process pool. Each module's `__all__` is its public face;
`ports` is what crosses to the drivers.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
