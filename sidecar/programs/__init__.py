"""Bundle programs: definitions, enrolments, certificate-driven progression, legacy import."""
