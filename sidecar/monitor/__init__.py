"""The learning monitor: certificate classes, sleepers and the reminders built on them (legacy-plugins.md §3.8)."""
