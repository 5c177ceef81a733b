"""The learning problem: what the policy observes (features) and what it is paid (reward)."""
