"""Adapters that deliver rendered messages: Twilio SMS, SMTP email, the portal inbox."""
