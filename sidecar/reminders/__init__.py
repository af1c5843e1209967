"""Reminders: scheduled e-mails to sleepers and an admin digest per level."""
