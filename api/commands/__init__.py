"""Click commands, one module per resource; each module's `register(group)` adds its commands."""
