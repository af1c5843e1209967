"""Adapters to a WordPress site running MemberLux: read-only schema reflection and queries,
WordPress data formats (PHP-serialized values, roles, time zones)."""
