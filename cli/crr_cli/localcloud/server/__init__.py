"""The moto server processes of the local cloud and what sits in front of moto in them.

- `process`: `python -m crr_cli.localcloud.server.process`, one moto server (main, or DynamoDB only).
- `routes`: one process per service, and the control routes `/_crr/...`.
- `request_counter`: server-side request counts and write times (`/_crr/requests`, `/_crr/writes`).

Kept import-free so a moto process starts fast.
"""
