"""The audio worker: takes jobs from the shared database and runs them in the request's trace."""

from services.worker.runner import JobWorker

__all__ = ["JobWorker"]
