"""The parity catalogue: each test checks that the embedded local cloud answers one call as AWS does.

Every test names the AWS documentation it follows. They share the integration tests' local cloud
(one moto server per test session) and its polling helper.
"""

from tests.integration.conftest import eventually, local_cloud

__all__ = ["eventually", "local_cloud"]
