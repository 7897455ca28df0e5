"""Glue between the Robot keyword libraries and the core (the only place, with the facades, that imports robot)."""
