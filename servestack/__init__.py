"""The servestack toolkit: the command line and what it runs (offline plans, policy checks, cost, comparison,
model uploads), apart from the Pulumi program (infra/) it drives."""
