"""Journeys: drive the API like real users (the demo, the benchmarks and the end-to-end tests use it)."""

from services.journeys.driver import JourneyReport, run_journeys

__all__ = ["JourneyReport", "run_journeys"]
