"""asv benchmarks of scopeops; configuration in ``benchmarks/asv.conf.json``."""
