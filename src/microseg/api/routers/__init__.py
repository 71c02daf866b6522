"""One router per domain: events, decide, profiles, quarantine, health, admin."""
