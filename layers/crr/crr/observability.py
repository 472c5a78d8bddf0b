"""The one place Powertools' logger, tracer and metrics are made (service and namespace from env)."""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
