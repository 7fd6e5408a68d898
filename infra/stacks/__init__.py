"""Stacks: they assemble constructs and define no resources of their own."""
