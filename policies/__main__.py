"""The policy pack's entry point for `pulumi preview --policy-pack policies`: build the pack, nothing else."""

from pulumi_policy import PolicyPack

from policies.rules import PACK_NAME, build_policies

PolicyPack(name=PACK_NAME, policies=build_policies())
