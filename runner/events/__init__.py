"""Any eunomia JSON package, run as ecli runs it.

``exports`` finds what ecli would poll and how each record is laid out,
``settings`` turns ``.rodata`` and ``.bss`` variables into ecli's flags,
``attach`` refuses programs the runner cannot attach cleanly, ``tracers``
holds one tracer per kind of output (ring buffer, perf event array, sample
map, none), ``format`` writes values as ecli does, and ``command`` is
``tcprtt run PACKAGE.json``.
"""
