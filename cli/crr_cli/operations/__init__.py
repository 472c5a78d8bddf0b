"""What the CLI does that the functions never do, free of boto3: manage rules (``catalog``), report how
replication is doing (``status``), compare a rule's buckets and queue repairs (``verify``).

Like the layer's domain, these depend on ``crr.ports``, ``crr.models`` and ``crr.errors`` only, and run in
tests against in-memory fakes; ``crr_cli.adapters`` and the layer's adapters implement their ports. They
live here, not in the layer, so the Lambda layer ships only what the functions import.
"""
