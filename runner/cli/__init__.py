"""The tcprtt command line: one module per command over ``runner.session``.

``main`` dispatches; ``trace`` is the default command, ``run`` runs any
eunomia package or wasm-bpf module, ``registry`` pushes and pulls, and
``doctor`` reports what the machine offers. Each imports what it needs when
it runs, so that a plain trace loads no registry client, exporter or wasm
runtime.
"""
