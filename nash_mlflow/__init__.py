"""Everything that reads or writes MLflow: the tracking layout of a sweep, the sweep reader, the
registry (aliases, history, promote, rollback), re-benchmarking a sweep, the sweep report, the
saved UI views and the pyfunc that serves a candidate."""
