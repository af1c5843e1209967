"""CRM grant bridge: turns CRM events and signed requests into MemberLux access grants."""
