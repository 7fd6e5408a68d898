"""Typed support for the end-to-end tests, one concern per module:

* `api`: the HTTP client of the local stack's API, and reading a mailbox over IMAPS;
* `proxy`: a TCP fault proxy in front of the stand-in (drop after DATA, stall mid-DATA);
* `tenants`: tenants of their own (through `local.seed`), mailbox users, addresses and bodies;
* `tracking`: sending, polling every status a message takes, the forward-only invariant;
* `injection`: wrappers around a running function's dependencies (throttling, crashes, recording);
* `aws_state`: what the tests read or change in the embedded AWS (DLQ depths, a message's age, redrive).
"""
