"""Processors: pure span/event-record → PostHog event mapping, then scrubbing of properties."""
