"""Deploy a SAM template into the local cloud's moto CloudFormation, offline.

The steps mirror `sam package` + `sam deploy`, minus everything that needs AWS (`pipeline.deploy_stack`
runs them in this order):
1. check the parameters and the template's `Rules` as CloudFormation does before it creates anything
   (`cfn_checks`; moto's CloudFormation checks neither);
2. zip every local `CodeUri` / `ContentUri`, and upload every local state machine definition, into an
   artifacts bucket in moto and point the template at it, remembering which directory each function's
   code came from (`package`);
3. transform SAM to CloudFormation with aws-sam-translator, with a managed-policy map that never calls
   IAM (`transform`);
4. fix the template where moto's CloudFormation would get it wrong, and take out or export the
   resources it must not create or only half creates (`template_for_moto`);
5. create the stack (or update it), wait until it is complete and list its resources (`stack`);
6. apply what moto ignored: roles' policies, queue policies, tables in the DynamoDB process, state
   machines where executions run (`fixups`, `state_machines`);
7. describe what was deployed for the executor and the poller (`describe`).

The public surface is below; the template tests use `transform.transform_offline` and
`cfn_yaml.load_cfn_template` directly.
"""

from crr_cli.localcloud.deploy.describe import (
    DeployedFunction,
    DeployedStack,
    DeployedStateMachine,
    EventSourceMapping,
    StackResource,
)
from crr_cli.localcloud.deploy.errors import DeployError
from crr_cli.localcloud.deploy.pipeline import deploy_stack

__all__ = [
    "DeployError",
    "DeployedFunction",
    "DeployedStack",
    "DeployedStateMachine",
    "EventSourceMapping",
    "StackResource",
    "deploy_stack",
]
