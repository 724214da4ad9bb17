"""The ``nash`` command: argument parsing and the entry points that start flows."""
