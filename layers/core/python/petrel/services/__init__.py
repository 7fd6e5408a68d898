"""Use cases as named steps. They import ports and models, never adapters."""
