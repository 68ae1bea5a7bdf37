"""Patient reconciliation (IHE Import Reconciliation Workflow): who a foreign
patient is here, and the coercion of their instances to the local identity."""
