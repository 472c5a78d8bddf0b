"""SAM -> CloudFormation offline: aws-sam-translator with a managed-policy map that never calls IAM.

The template tests run the same transform the local deploy runs, so what they assert about the
transformed template is what moto's CloudFormation creates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import boto3
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from crr_cli.localcloud.deploy.errors import DeployError

# The AWS managed policies SAM attaches to function roles; resolved here so no IAM call is needed.
MANAGED_POLICIES: Mapping[str, str] = {
    name: f"arn:aws:iam::aws:policy/{path}"
    for name, path in {
        "AWSLambdaBasicExecutionRole": "service-role/AWSLambdaBasicExecutionRole",
        "AWSLambdaSQSQueueExecutionRole": "service-role/AWSLambdaSQSQueueExecutionRole",
        "AWSLambdaDynamoDBExecutionRole": "service-role/AWSLambdaDynamoDBExecutionRole",
        "AWSLambdaKinesisExecutionRole": "service-role/AWSLambdaKinesisExecutionRole",
        "AWSLambdaVPCAccessExecutionRole": "service-role/AWSLambdaVPCAccessExecutionRole",
        "AWSLambdaRole": "service-role/AWSLambdaRole",
        "AWSXrayWriteOnlyAccess": "AWSXrayWriteOnlyAccess",
        "AWSXRayDaemonWriteAccess": "AWSXRayDaemonWriteAccess",
        "CloudWatchLambdaInsightsExecutionRolePolicy": "CloudWatchLambdaInsightsExecutionRolePolicy",
    }.items()
}


def transform_offline(sam: dict[str, Any], parameters: Mapping[str, str], region: str) -> dict[str, Any]:
    """SAM -> CloudFormation, offline (the managed-policy map is `MANAGED_POLICIES`)."""
    # Our own offline metrics object, published (to nowhere) so it does not warn when collected.
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    session = boto3.session.Session(region_name=region)
    translator = Translator(None, Parser(), boto_session=session, metrics=metrics)
    try:
        template: dict[str, Any] = translator.translate(
            copy.deepcopy(sam),
            parameter_values=dict(parameters),
            get_managed_policy_map=lambda: dict(MANAGED_POLICIES),
        )
    except Exception as error:  # samtranslator raises its own hierarchy; all mean "invalid template"
        raise DeployError(f"SAM transform failed: {error}") from error
    finally:
        metrics.publish()
    return template
