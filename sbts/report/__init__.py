"""Reports a person reads: figures of a run's results (matplotlib, the optional ``plot`` extra)."""
