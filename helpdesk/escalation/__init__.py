"""Escalation: triggers, follow-the-sun manager choice, briefings."""
