"""IAM enforcement in the main moto process of the local cloud.

moto's server can check every request against IAM (`INITIAL_NO_AUTH_ACTION_COUNT`, its "IAM-based
access control"): it verifies the SigV4 signature with the caller's secret, collects the policies
of the IAM user or assumed role that owns the access key, and refuses an action they do not allow.
What it checks, and where this module brings it closer to AWS:

* **S3**: action and resource (`arn:aws:s3:::bucket` / `bucket/key`), one action per request (HEAD
  and GET need `s3:GetObject`, a versioned GET `s3:GetObjectVersion`, ...). AWS also checks the
  copy source of CopyObject and UploadPartCopy (`s3:GetObject`, or `s3:GetObjectVersion` for a
  pinned version) and `s3:GetObject` for a write with `If-Match`, and answers a HEAD or GET of a
  missing key with 403 rather than 404 to a caller without `s3:ListBucket`: `install()` adds these.
  moto names an object request's action by the last query parameter it knows, so a GET of a
  version's tags was authorised as `s3:GetObjectVersion` and a DELETE of tags as `s3:DeleteObject`;
  `install()` names it as AWS does (`s3:GetObjectVersionTagging`, `s3:DeleteObjectTagging`, ...).
* Denials come in the service's protocol: `AccessDenied` for SQS, `AccessDeniedException` for Step
  Functions and Lambda (moto answered XML, which their JSON clients read as a bare "403").
* **SQS**: action and queue ARN (batch operations authorised as their single action, as on AWS).
* **Step Functions**: action only in moto (resource `*`); `install()` resolves `stateMachineArn` /
  `executionArn` so statements scoped to a machine work.
* **EventBridge**: action, and the rule's ARN for operations on a rule (`install()`; moto checks `*`).
* **Other services of this process** (IAM, STS, Lambda's API, CloudFormation, KMS): action only.
  Only the operator (admin) calls them.
* **DynamoDB** runs in a second moto process, which holds neither the roles nor the sessions:
  it is not enforced; tests/unit/test_template*.py check the template's DynamoDB grants instead.
* moto fails an Allow statement whose `Condition` it cannot evaluate with an explicit *deny*;
  on AWS a statement whose condition does not hold simply does not apply. `install()` makes it so
  (the statement then grants nothing, as moto knows no condition context of S3 or SQS requests).

Identities (`enable()`): the operator's well-known local key (`testing`) belongs to an IAM user with
an administrator policy, as a user's own credentials would on AWS; so does the key moto's Step
Functions interpreter signs its tasks with (`ak`), so state machine roles are not enforced locally
(template tests cover them). Functions get credentials of their execution role from
`assume_role_as_service()`, the way Lambda assumes the role as `lambda.amazonaws.com`: the role's
trust policy must name that service.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import JsonRESTError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.events.responses import EventsHandler
from moto.iam import access_control
from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.iam.models import AWSManagedPolicy, IAMBackend, iam_backends
from moto.s3.exceptions import MissingKey
from moto.s3.responses import S3Response
from moto.stepfunctions.responses import StepFunctionResponse
from moto.sts.models import sts_backends

ADMIN_USER = "crr-local-admin"
# access key id -> secret: the operator's (clients.LOCAL_ACCESS_KEY_ID) and moto's Step Functions tasks'.
ADMIN_KEYS = {"testing": "testing", "ak": "sk"}
ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
PARTITION = "aws"
SESSION_DURATION_S = 12 * 3600  # Lambda refreshes a role session; a local one lives as long as a test run

# API operation -> the IAM action AWS authorises it with, where moto takes the operation's name.
IAM_ACTIONS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "s3:HeadBucket": "s3:ListBucket",
}

# Services of the JSON protocols and the code AWS names a denial with (SQS, query-compatible, keeps
# its query-protocol code); moto answers every non-S3 denial in XML, which a JSON client reads as "403".
JSON_DENIAL_CODES = {
    "sqs": "AccessDenied",
    "states": "AccessDeniedException",
    "lambda": "AccessDeniedException",
    "events": "AccessDeniedException",
}

# Object sub-resource -> (IAM action, IAM action for a request naming a versionId), per method.
OBJECT_SUBRESOURCE_ACTIONS = {
    "GET": {"tagging": ("GetObjectTagging", "GetObjectVersionTagging"), "acl": ("GetObjectAcl", "GetObjectVersionAcl")},
    "PUT": {"tagging": ("PutObjectTagging", "PutObjectVersionTagging"), "acl": ("PutObjectAcl", "PutObjectVersionAcl")},
    "DELETE": {"tagging": ("DeleteObjectTagging", "DeleteObjectVersionTagging")},
}

_installed = False


class RoleNotAssumableError(ValueError):
    """The role does not exist or its trust policy does not let the service assume it."""


def _backend() -> IAMBackend:
    backend: IAMBackend = iam_backends[DEFAULT_ACCOUNT_ID][PARTITION]
    return backend


def _ensure_admin(backend: IAMBackend) -> None:
    if ADMIN_USER not in backend.users:
        backend.create_user(region_name="us-east-1", user_name=ADMIN_USER)
    user = backend.users[ADMIN_USER]
    backend.put_user_policy(ADMIN_USER, "AdministratorAccess", ADMIN_POLICY)
    present = {key.access_key_id for key in user.access_keys}
    for key_id, secret in ADMIN_KEYS.items():
        if key_id in present:
            continue
        key = backend.create_access_key(ADMIN_USER)
        key.access_key_id, key.secret_access_key = key_id, secret


def _ensure_managed_policies(backend: IAMBackend, names: list[str]) -> None:
    """Load the named AWS managed policies (moto loads none unless told to load all 1,500)."""
    data = json.loads(aws_managed_policies_data)
    for name in names:
        policy = AWSManagedPolicy.from_data(name, DEFAULT_ACCOUNT_ID, "us-east-1", data[name])
        backend.managed_policies.setdefault(policy.arn, policy)


def enable(managed_policies: list[str], enforce: bool = True) -> dict[str, Any]:
    """Create the admin identities, load `managed_policies` (roles attach them either way) and, when
    `enforce`, switch enforcement on (idempotent; call again after a moto reset, which forgets users)."""
    install()
    backend = _backend()
    _ensure_admin(backend)
    _ensure_managed_policies(backend, managed_policies)
    if enforce:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
    return {"enforced": enforce, "admin": backend.users[ADMIN_USER].arn}


def _service_may_assume(trust_policy: str, service: str) -> bool:
    statements = json.loads(trust_policy).get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        services = (statement.get("Principal") or {}).get("Service", [])
        actions = [actions] if isinstance(actions, str) else actions
        services = [services] if isinstance(services, str) else services
        if statement.get("Effect") == "Allow" and "sts:AssumeRole" in actions and service in services:
            return True
    return False


def assume_role_as_service(role_arn: str, service: str, session_name: str) -> dict[str, str]:
    """Temporary credentials of `role_arn` for `service` (e.g. lambda.amazonaws.com), as STS gives
    them to a service its trust policy names. Raises RoleNotAssumableError otherwise."""
    backend = _backend()
    try:
        role = backend.get_role_by_arn(role_arn)
    except Exception as error:  # moto's NotFoundException: no such role
        raise RoleNotAssumableError(f"no role {role_arn}") from error
    if not _service_may_assume(role.assume_role_policy_document, service):
        raise RoleNotAssumableError(f"the trust policy of {role_arn} does not let {service} assume it")
    session = sts_backends[DEFAULT_ACCOUNT_ID][PARTITION].assume_role(
        region_name="us-east-1",
        role_session_name=session_name,
        role_arn=role_arn,
        policy="",
        duration=SESSION_DURATION_S,
        external_id="",
    )
    return {
        "AccessKeyId": session.access_key_id,
        "SecretAccessKey": session.secret_access_key,
        "SessionToken": session.session_token,
    }


# ------------------------------------------------------------------ closer to AWS


def _unmet_condition_does_not_apply(original: Any) -> Any:
    def is_action_permitted(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if result == access_control.PermissionResult.DENIED and self._statement.get("Effect") == "Allow":
            return access_control.PermissionResult.NEUTRAL
        return result

    return is_action_permitted


def _authorised_as_aws_does(original: Any) -> Any:
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._action = IAM_ACTIONS.get(self._action, self._action)

    return init


def _denied_in_the_service_protocol(original: Any) -> Any:
    def raise_access_denied(self: Any) -> None:
        code = JSON_DENIAL_CODES.get(self._service)
        if code is None:
            original(self)
            return
        error = JsonRESTError(code, f"User: {self._access_key.arn} is not authorized to perform: {self._action}")
        error.code = 403
        raise error

    return raise_access_denied


def _bodiless_requests_signed_empty(original: Any) -> Any:
    """moto re-signs a request with its parsed parameters as the body when it has none; for rest-json
    services (Lambda) those include the headers, so every GET failed with SignatureDoesNotMatch."""

    def create_aws_request(self: Any) -> Any:
        if self._body or self._method not in ("GET", "HEAD", "DELETE"):
            return original(self)
        data, self._data = self._data, {}
        try:
            return original(self)
        finally:
            self._data = data

    return create_aws_request


def _copy_source(header: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id or None) of an `x-amz-copy-source` header."""
    path, _, query = header.lstrip("/").partition("?")
    bucket, _, key = path.partition("/")
    version = None
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "versionId":
            version = unquote(value)
    return bucket, unquote(key), version


def _authorize_as(response: Any, action: str, bucket: str, key: str | None) -> None:
    previous = response.data.get("Action")
    response.data["Action"] = action
    try:
        response._authenticate_and_authorize_s3_action(bucket_name=bucket, key_name=key)
    finally:
        response.data["Action"] = previous


def _reads_checked(original: Any) -> Any:
    """Authorise what AWS authorises beside the request's own action: the copy source's read, and
    `s3:GetObject` on the key for a write with If-Match."""

    def handle(self: Any, *args: Any) -> Any:
        key_name = args[-1]  # _key_response_put(query, key_name), _key_response_post(..., query, key_name)
        source = self.headers.get("x-amz-copy-source")
        if source:
            bucket, key, version = _copy_source(source)
            _authorize_as(self, "GetObjectVersion" if version else "GetObject", bucket, key)
        if self.headers.get("If-Match"):
            _authorize_as(self, "GetObject", self.bucket_name, key_name)
        return original(self, *args)

    return handle


def _missing_key_needs_list_bucket_head(original: Any) -> Any:
    """A HEAD of a missing key answers 404 only to a caller allowed s3:ListBucket, 403 to others."""

    def head_object(self: Any, bucket_name: str, query: Any, key_name: str, headers: Any) -> Any:
        answer = original(self, bucket_name, query, key_name, headers)
        if answer[0] == 404 and "x-amz-delete-marker" not in answer[1]:
            _authorize_as(self, "ListBucket", bucket_name, None)
        return answer

    return head_object


def _missing_key_needs_list_bucket_get(original: Any) -> Any:
    """The same for GET (and its sub-resources): NoSuchKey to a caller allowed s3:ListBucket, else AccessDenied."""

    def key_response_get(self: Any, query: Any, key_name: str) -> Any:
        try:
            return original(self, query, key_name)
        except MissingKey:
            _authorize_as(self, "ListBucket", self.bucket_name, None)
            raise

    return key_response_get


def _object_actions_as_aws_names_them(original: Any) -> Any:
    """An object's tags and ACL are authorised by their own actions, the version's when a versionId
    is named; a HEAD of a version needs s3:GetObjectVersion like its GET."""

    def set_action(self: Any, action_resource_type: str, method: str, querystring: dict[str, Any]) -> None:
        original(self, action_resource_type, method, querystring)
        if action_resource_type != "KEY":
            return
        versioned = "versionId" in querystring
        for subresource, (action, version_action) in OBJECT_SUBRESOURCE_ACTIONS.get(method, {}).items():
            if subresource in querystring:
                self.data["Action"] = version_action if versioned else action
                return
        if method == "HEAD" and versioned:
            self.data["Action"] = "GetObjectVersion"

    return set_action


def _events_rule_resource(self: Any) -> str:
    """The rule's ARN for EventBridge rule operations (`Name`, or `Rule` for targets), `*` otherwise."""
    name = self._get_param("Name") or self._get_param("Rule")
    if not name or not str(self._get_action()).endswith(("Rule", "Targets", "TargetsByRule")):
        return "*"
    bus = self._get_param("EventBusName") or "default"
    path = f"rule/{name}" if bus == "default" else f"rule/{bus}/{name}"
    return f"arn:{PARTITION}:events:{self.region}:{self.current_account}:{path}"


def _step_functions_resource(self: Any) -> str:
    arn = self._get_param("stateMachineArn") or self._get_param("executionArn")
    return str(arn) if arn else "*"


def install() -> None:
    """Patch moto's access control in this process (idempotent); enforcement stays off until `enable()`."""
    global _installed  # noqa: PLW0603 - process-wide patch state
    if _installed:
        return
    request = access_control.IAMRequestBase
    request.__init__ = _authorised_as_aws_does(request.__init__)  # type: ignore[method-assign]
    request._create_aws_request = _bodiless_requests_signed_empty(request._create_aws_request)  # type: ignore[method-assign]
    denial = access_control.IAMRequest
    denial._raise_access_denied = _denied_in_the_service_protocol(denial._raise_access_denied)  # type: ignore[method-assign]
    statement = access_control.IAMPolicyStatement
    statement.is_action_permitted = _unmet_condition_does_not_apply(statement.is_action_permitted)  # type: ignore[method-assign]
    for name in ("_key_response_put", "_key_response_post"):
        setattr(S3Response, name, _reads_checked(getattr(S3Response, name)))
    setattr(S3Response, "head_object", _missing_key_needs_list_bucket_head(S3Response.head_object))  # noqa: B010
    setattr(S3Response, "_key_response_get", _missing_key_needs_list_bucket_get(S3Response._key_response_get))  # noqa: B010
    setattr(StepFunctionResponse, "_determine_resource", _step_functions_resource)  # noqa: B010
    setattr(EventsHandler, "_determine_resource", _events_rule_resource)  # noqa: B010
    setattr(S3Response, "_set_action", _object_actions_as_aws_names_them(S3Response._set_action))  # noqa: B010
    _installed = True
