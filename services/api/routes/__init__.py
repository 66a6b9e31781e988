"""The api's routers, one module per resource."""
