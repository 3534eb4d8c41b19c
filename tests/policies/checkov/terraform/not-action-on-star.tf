resource "aws_iam_role_policy" "not_action" {
  name   = "not_action"
  role   = "serving"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "NotAction": [
        "iam:*",
        "organizations:*"
      ],
      "Resource": "*"
    }
  ]
}
POLICY
}
