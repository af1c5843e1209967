"""Outgoing e-mail: one SMTP mailer for the whole project, and sandboxed templates."""
