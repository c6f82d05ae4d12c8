"""Reports: run directories -> plots (matplotlib, Agg) + a self-contained HTML page and a markdown report
(`build.build_report`), with the paper-style strategies x benchmarks table across runs and seeds."""
