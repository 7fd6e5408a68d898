"""The domain checker (issue 10): a function on an EventBridge rule that re-checks every sending domain's
DNS records (drift), records `domain.verified` / `domain.dns_error` events, stops a domain whose DKIM
record disappeared, and deletes the secrets of DKIM keys retired past their grace.

It runs every `domain_check_minutes`, one run at a time (reserved concurrency 1 unless
`domain_checker_one_at_a_time` is false): overlapping runs would look every domain up twice and
record its events twice. A run that cannot start, or fails, is not retried: the next one re-checks
everything (its event is dropped after a minute, the shortest age Lambda's asynchronous queue allows).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from infra.constructs.functions import DOMAIN_CHECKER, FunctionDependencies, PetrelFunction

# How long a run's event may wait before it is dropped: a missed run is made up by the next one.
CHECK_EVENT_AGE = Duration.minutes(1)


class DomainChecker(Construct):
    """The domain checker function and the rule that runs it."""

    def __init__(self, scope: Construct, construct_id: str, *, deps: FunctionDependencies) -> None:
        super().__init__(scope, construct_id)
        config = deps.config
        self.checker = PetrelFunction(self, "Checker", definition=DOMAIN_CHECKER, deps=deps)
        function = self.checker.function
        function.configure_async_invoke(max_event_age=CHECK_EVENT_AGE, retry_attempts=0)
        self.rule = events.Rule(
            self,
            "Schedule",
            rule_name=config.physical_name(DOMAIN_CHECKER.slug),
            description="Runs the domain checker: re-checks every sending domain's DNS records (drift)",
            schedule=events.Schedule.rate(Duration.minutes(config.domain_check_minutes)),
            targets=[targets.LambdaFunction(function, retry_attempts=0, max_event_age=CHECK_EVENT_AGE)],
        )
