"""The chaos suite: faults injected into a running system under load, and an oracle."""
