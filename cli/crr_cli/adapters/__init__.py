"""boto3 adapters only the CLI uses (``health`` for ``crr status``, ``kms`` for ``crr rules add``). Each turns
ClientError into a crr error, as the layer's adapters do."""
