"""Extensions: endpoints beside the data path (health, readiness, metrics), as the Collector calls them."""
