resource "aws_iam_role" "irsa_no_sub" {
  name               = "irsa_no_sub"
  assume_role_policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "sts:AssumeRoleWithWebIdentity",
      "Principal": {
        "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/47FF84030B293295A85B14DE05BA7933"
      },
      "Condition": {
        "StringEquals": {
          "oidc.eks.us-east-1.amazonaws.com/id/47FF84030B293295A85B14DE05BA7933:aud": "sts.amazonaws.com"
        }
      }
    }
  ]
}
POLICY
}
