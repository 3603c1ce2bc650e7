"""Test-only BPF sources, packed as eunomia's ecc packs them (``pack``)."""
