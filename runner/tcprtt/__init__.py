"""What the runner knows of tcprtt itself, read from probe/config.json alone:
its attach variants and how one is chosen (``variants``), and how the
command line's flags become the probe's settings (``settings``). The generic
layers (package, loader, tracer, ``runner run``) know none of it."""
