"""aeq export."""
