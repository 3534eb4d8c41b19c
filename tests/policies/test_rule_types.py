"""The rules name real resources: every type token exists in the provider SDKs the project pins, and the inputs
the rules read are those resources' wire names (camelCase, as plans and the policy engine see them)."""

from __future__ import annotations

import pytest

from policies.rules import RULES, Rule
from tests.sdk import input_type, resource_inputs

PACKAGES = {"aws": "pulumi_aws", "gcp": "pulumi_gcp", "azure-native": "pulumi_azure_native",
            "kubernetes": "pulumi_kubernetes"}
# Custom resources that no SDK package defines: Gateway API and GKE's FrontendConfig, created as
# apiextensions.CustomResource with these type tokens.
CUSTOM_RESOURCE_GROUPS = ("kubernetes:gateway.networking.k8s.io/", "kubernetes:networking.gke.io/")

# Inputs the identity, storage, registry and endpoint rules read, by resource.
READS = {
    "aws:iam/role:Role": ["assumeRolePolicy", "inlinePolicies", "managedPolicyArns"],
    "aws:iam/policy:Policy": ["policy"],
    "aws:iam/rolePolicy:RolePolicy": ["policy"],
    "aws:iam/userPolicy:UserPolicy": ["policy"],
    "aws:iam/groupPolicy:GroupPolicy": ["policy"],
    "aws:iam/policyAttachment:PolicyAttachment": ["policyArn"],
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ["policyArn"],
    "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive": ["policyArns"],
    "aws:ssoadmin/permissionSetInlinePolicy:PermissionSetInlinePolicy": ["inlinePolicy"],
    "aws:ssoadmin/managedPolicyAttachmentsExclusive:ManagedPolicyAttachmentsExclusive": ["managedPolicyArns"],
    "aws:s3/bucketAcl:BucketAcl": ["acl", "accessControlPolicy"],
    "aws:s3/bucketAclV2:BucketAclV2": ["acl", "accessControlPolicy"],
    "aws:s3/bucketObjectv2:BucketObjectv2": ["acl"],
    "aws:s3/objectCopy:ObjectCopy": ["acl", "grants"],
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": ["blockPublicAcls", "blockPublicPolicy",
                                                               "ignorePublicAcls", "restrictPublicBuckets"],
    "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock": ["blockPublicAcls", "restrictPublicBuckets"],
    "aws:s3/accessPoint:AccessPoint": ["policy", "publicAccessBlockConfiguration"],
    "aws:s3/bucketPolicy:BucketPolicy": ["policy"],
    "aws:s3control/multiRegionAccessPointPolicy:MultiRegionAccessPointPolicy": [],
    "aws:ecr/repository:Repository": ["name", "imageTagMutability", "imageScanningConfiguration"],
    "aws:ecr/repositoryPolicy:RepositoryPolicy": ["policy"],
    "aws:ecr/registryPolicy:RegistryPolicy": ["policy"],
    "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate": ["imageTagMutability", "repositoryPolicy"],
    "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration": ["rules"],
    "aws:ecrpublic/repository:Repository": ["repositoryName"],
    "aws:lb/listener:Listener": ["protocol", "port", "defaultActions", "loadBalancerArn"],
    "aws:lb/listenerRule:ListenerRule": ["actions", "listenerArn"],
    "aws:lb/loadBalancer:LoadBalancer": ["internal", "loadBalancerType"],
    "gcp:storage/bucketACL:BucketACL": ["predefinedAcl", "defaultAcl", "roleEntities"],
    "gcp:storage/objectACL:ObjectACL": ["predefinedAcl", "roleEntities"],
    "gcp:storage/defaultObjectACL:DefaultObjectACL": ["roleEntities"],
    "gcp:storage/bucketAccessControl:BucketAccessControl": ["entity", "role"],
    "gcp:artifactregistry/repository:Repository": ["format", "mode", "dockerConfig"],
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": ["loadBalancingScheme", "target", "portRange"],
    "gcp:compute/forwardingRule:ForwardingRule": ["loadBalancingScheme", "target", "ports", "portRange", "allPorts"],
    "gcp:compute/targetHttpProxy:TargetHttpProxy": ["urlMap"],
    "gcp:compute/uRLMap:URLMap": ["defaultUrlRedirect", "pathMatchers", "hostRules", "defaultService",
                                  "defaultRouteAction"],
    "azure-native:authorization:RoleAssignment": ["roleDefinitionId", "scope", "principalType", "principalId"],
    "azure-native:authorization:RoleDefinition": ["permissions"],
    "azure-native:storage:StorageAccount": ["allowBlobPublicAccess", "enableHttpsTrafficOnly", "minimumTlsVersion"],
    "azure-native:storage:BlobContainer": ["publicAccess"],
    "azure-native:containerregistry:Registry": ["adminUserEnabled", "anonymousPullEnabled"],
    "azure-native:network:ApplicationGateway": ["frontendIPConfigurations", "httpListeners", "requestRoutingRules",
                                                "redirectConfigurations"],
    "azure-native:cdn:Route": ["supportedProtocols", "httpsRedirect"],
    "kubernetes:core/v1:Secret": ["stringData", "data"],
    "kubernetes:core/v1:ConfigMap": ["data", "binaryData"],
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding": ["roleRef", "subjects"],
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole": ["rules", "aggregationRule"],
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBindingList": ["items"],
    "kubernetes:helm.sh/v3:Release": ["values"],
    "kubernetes:helm.sh/v4:Chart": ["values"],
}
# Nested input types, by (package, module, class): the fields read inside them.
NESTED = {
    ("pulumi_aws", "s3", "BucketAclAccessControlPolicyGrantGranteeArgs"): ["uri"],
    ("pulumi_aws", "s3", "ObjectCopyGrantArgs"): ["uri", "permissions"],
    ("pulumi_aws", "ecr", "RepositoryImageScanningConfigurationArgs"): ["scanOnPush"],
    ("pulumi_aws", "ecr", "RegistryScanningConfigurationRuleArgs"): ["scanFrequency", "repositoryFilters"],
    ("pulumi_aws", "ecr", "RegistryScanningConfigurationRuleRepositoryFilterArgs"): ["filter"],
    ("pulumi_aws", "iam", "RoleInlinePolicyArgs"): ["name", "policy"],
    ("pulumi_aws", "lb", "ListenerDefaultActionArgs"): ["type", "redirect"],
    ("pulumi_aws", "lb", "ListenerDefaultActionRedirectArgs"): ["protocol"],
    ("pulumi_gcp", "artifactregistry", "RepositoryDockerConfigArgs"): ["immutableTags"],
    ("pulumi_gcp", "compute", "URLMapDefaultUrlRedirectArgs"): ["httpsRedirect"],
    ("pulumi_azure_native", "authorization", "PermissionArgs"): ["actions"],
    ("pulumi_azure_native", "network", "ApplicationGatewayHttpListenerArgs"): ["name", "protocol",
                                                                               "frontendIPConfiguration"],
    ("pulumi_azure_native", "network", "ApplicationGatewayRequestRoutingRuleArgs"): ["httpListener",
                                                                                     "redirectConfiguration"],
    ("pulumi_azure_native", "network", "ApplicationGatewayRedirectConfigurationArgs"): ["targetListener", "targetUrl"],
    ("pulumi_azure_native", "network", "ApplicationGatewayFrontendIPConfigurationArgs"): ["publicIPAddress"],
    ("pulumi_kubernetes", "rbac/v1", "SubjectArgs"): ["kind", "name", "namespace"],
    ("pulumi_kubernetes", "rbac/v1", "PolicyRuleArgs"): ["apiGroups", "resources", "verbs", "resourceNames"],
    ("pulumi_kubernetes", "core/v1", "SecretKeySelectorArgs"): ["name", "key", "optional"],
    ("pulumi_kubernetes", "core/v1", "ServicePortArgs"): ["name", "port", "appProtocol"],
}


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_type_a_rule_names_exists(rule: Rule) -> None:
    for token in rule.types:
        prefix = token.split(":", 1)[0]
        if token.startswith(CUSTOM_RESOURCE_GROUPS) or prefix not in PACKAGES:
            continue
        assert token in resource_inputs(PACKAGES[prefix]), f"{token} is not a resource of {PACKAGES[prefix]}"


@pytest.mark.parametrize("token", sorted(READS))
def test_the_inputs_read_are_wire_names(token: str) -> None:
    names = resource_inputs(PACKAGES[token.split(":", 1)[0]]).get(token)
    assert names is not None, f"{token} is not in its SDK"
    missing = set(READS[token]) - set(names)
    assert not missing, f"{token} has no input(s) {sorted(missing)}; it has {sorted(names)}"


@pytest.mark.parametrize("where", sorted(NESTED), ids=lambda w: w[2])
def test_nested_inputs_read_are_wire_names(where: tuple[str, str, str]) -> None:
    names = input_type(*where)
    assert set(NESTED[where]) <= set(names), (where, names)
