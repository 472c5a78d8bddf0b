"""The one error a local deploy raises for the template or the stack it could not create."""


class DeployError(RuntimeError):
    """The template cannot be deployed locally, or moto's CloudFormation failed to create the stack."""
