"""Translation between wire formats: pure functions, no I/O."""
