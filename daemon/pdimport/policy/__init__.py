"""What to do with what was found: classification, grouping, the one-patient rule, AI marking."""
