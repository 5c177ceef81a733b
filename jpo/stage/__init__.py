"""The CI stage: suggest, guards, rollback, return to the best, crash-safe write and audit log."""
