resource "aws_iam_role" "trust_org_negated" {
  name               = "trust_org_negated"
  assume_role_policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "sts:AssumeRole",
      "Principal": "*",
      "Condition": {
        "StringNotEquals": {
          "aws:PrincipalOrgID": "o-abc"
        }
      }
    }
  ]
}
POLICY
}
