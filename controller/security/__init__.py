"""Kafka security as code: the ACLs of the controller's roles (controller/security/acls.py)."""
