"""The public HTTP API: routes, problem details, the OpenAPI document."""
