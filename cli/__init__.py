"""`petrel`: the operators' command. Administers tenants, API keys, sending domains and SMTP servers,
checks a tenant's SMTP server, and lists and redrives dead letters.

It is not deployed (the Lambda layer is built from layers/core/python only). Modules by concern:
`target` (which environment: the local stack's .petrel/local.json, or a deployed environment of
cdk.json read through `infra.config`), `admin/` (tenant, key, domain, server), `dlq`; each command
module registers its own parser and handler (`register`), and `main` dispatches to it.
"""
