"""The `petrel` command (operators' tool; not shipped in the Lambda layer)."""
