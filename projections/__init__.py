"""schedlog.projections: the read side (the `_scheduled_functions` view, queries, history)."""
