"""Evaluation: `runner.evaluate_domain` (generate + score one domain with its training reward), the benchmark
registry (`benchmarks`: name -> domain kind, loader params, headline metric) and `mgs eval`'s suite runner."""
