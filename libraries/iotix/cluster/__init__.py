"""Fleets and receivers sharded over processes and machines as Ray actors (the optional ``cluster`` extra)."""
