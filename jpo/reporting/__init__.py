"""What people read: campaign views, `jpo log`, audit-log metrics, the dashboard."""
