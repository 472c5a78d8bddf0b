"""boto3 adapters: the only modules that call AWS. Each turns ClientError into a crr error."""
