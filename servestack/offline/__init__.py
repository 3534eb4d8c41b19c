"""The offline plan: the real program run under the Pulumi SDK's mock runtime, with no CLI or cloud."""
