"""Pub/Sub: the intents, results and dead-letter topics, their pull subscriptions, and the
settings of the trigger subscription Eventarc creates for the function.
"""
from __future__ import annotations

from deploy.config import DeployConfig
from deploy.steps import Always, Ensure, Query, Ref, Remove, Step, gcloud

RETENTION = '7d'


def topics(cfg: DeployConfig) -> list[Step]:
    """The three topics, created when missing."""
    return [Ensure(f'topic {topic}',
                   probe=gcloud(cfg.project, 'pubsub', 'topics', 'describe', topic),
                   create=(gcloud(cfg.project, 'pubsub', 'topics', 'create', topic),))
            for topic in (cfg.intents_topic, cfg.results_topic, cfg.dead_letter_topic)]


def pull_subscriptions(cfg: DeployConfig) -> list[Step]:
    """Pull subscriptions that keep dead letters and results for a week, for people and tools to read."""
    steps: list[Step] = []
    for subscription, topic in ((cfg.dead_letter_subscription, cfg.dead_letter_topic),
                                (cfg.results_subscription, cfg.results_topic)):
        settings = (f'--message-retention-duration={RETENTION}', '--expiration-period=never')
        steps.append(Ensure(
            f'subscription {subscription}',
            probe=gcloud(cfg.project, 'pubsub', 'subscriptions', 'describe', subscription),
            create=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'create', subscription, f'--topic={topic}',
                           *settings),),
            update=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'update', subscription, *settings),),
        ))
    return steps


def find_trigger_subscription(cfg: DeployConfig) -> list[Step]:
    """Look up the subscription Eventarc created for the function (TRIGGER_SUBSCRIPTION)."""
    return [
        Query('TRIGGER', gcloud(cfg.project, 'functions', 'describe', cfg.function_name, f'--region={cfg.region}',
                                '--format=value(eventTrigger.trigger)')),
        Query('TRIGGER_SUBSCRIPTION', gcloud(cfg.project, 'eventarc', 'triggers', 'describe', Ref('TRIGGER'),
                                             f'--location={cfg.region}',
                                             '--format=value(transport.pubsub.subscription)')),
    ]


def configure_trigger_subscription(cfg: DeployConfig) -> list[Step]:
    """Ack deadline above the function timeout (else Pub/Sub redelivers while a run is still going),
    retry backoff, and a dead-letter topic after MAX_DELIVERY_ATTEMPTS.
    """
    return [Always('trigger subscription: ack deadline, backoff and dead letters', (
        gcloud(cfg.project, 'pubsub', 'subscriptions', 'update', Ref('TRIGGER_SUBSCRIPTION'),
               f'--ack-deadline={cfg.ack_deadline_seconds}',
               '--min-retry-delay=10s', '--max-retry-delay=600s',
               f'--dead-letter-topic={cfg.topic_path(cfg.dead_letter_topic)}',
               f'--max-delivery-attempts={cfg.max_delivery_attempts}'),
    ))]


def remove_messaging(cfg: DeployConfig) -> list[Step]:
    """Delete the pull subscriptions and the topics (the trigger subscription goes with the function)."""
    steps: list[Step] = [
        Remove(f'subscription {name}',
               probe=gcloud(cfg.project, 'pubsub', 'subscriptions', 'describe', name),
               delete=(gcloud(cfg.project, 'pubsub', 'subscriptions', 'delete', name),))
        for name in (cfg.dead_letter_subscription, cfg.results_subscription)]
    steps += [Remove(f'topic {topic}',
                     probe=gcloud(cfg.project, 'pubsub', 'topics', 'describe', topic),
                     delete=(gcloud(cfg.project, 'pubsub', 'topics', 'delete', topic),))
              for topic in (cfg.intents_topic, cfg.results_topic, cfg.dead_letter_topic)]
    return steps


def project_number(cfg: DeployConfig) -> list[Step]:
    """PROJECT_NUMBER, which names the Pub/Sub service agent."""
    return [Query('PROJECT_NUMBER', gcloud(cfg.project, 'projects', 'describe', cfg.project,
                                           '--format=value(projectNumber)'))]

