resource "aws_iam_role_policy" "wildcard_prefix" {
  name   = "wildcard_prefix"
  role   = "serving"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "s*:*",
      "Resource": "*"
    }
  ]
}
POLICY
}
