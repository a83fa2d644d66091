"""Security: token encryption, tenancy, API authentication and the audit log."""
