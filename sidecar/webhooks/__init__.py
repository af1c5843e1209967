"""Outbound webhooks (signed, retried, logged) and MemberLux's own webhooks as an event source."""
